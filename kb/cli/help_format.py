"""One fix to typer's help (0.29): a flag such as ``--help`` or ``--wait`` takes no value, so its help line shows no
``<bool>`` type as if it did. Options that take values keep their ``<int>``, ``<str>``... types."""

from __future__ import annotations

from typer._click import Context  # typer 0.29 carries its own click: the Context its options are given
from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _without_flag_type(self: TyperOption, ctx: Context) -> str | None:
    if getattr(self, "is_bool_flag", False) and self.metavar is None:
        return None
    return _display_type_rich(self, ctx)


def install() -> None:
    # a patch of typer's own class (its options are made inside typer): mypy forbids assigning to a method
    TyperOption.display_type_rich = _without_flag_type  # type: ignore[method-assign]
