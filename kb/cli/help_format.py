"""One fix to typer's help (0.29): a flag such as ``--help`` or ``--wait`` takes no value, so its help line shows no
``<bool>`` type as if it did. Options that take values keep their ``<int>``, ``<str>``... types."""

from __future__ import annotations

from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _without_flag_type(self: TyperOption, ctx) -> str | None:
    if getattr(self, "is_bool_flag", False) and self.metavar is None:
        return None
    return _display_type_rich(self, ctx)


def install() -> None:
    TyperOption.display_type_rich = _without_flag_type
