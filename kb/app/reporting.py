"""What a long use case tells about its steps while it runs: the CLI shows them as progress bars or phase lines
(kb.cli.progress.Phases), the other adapters pass nothing (``Quiet``). A use case never prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Reporter(Protocol):
    """``stage(name, total)`` starts a step and returns ``tick(n)`` to advance it; ``done(name)`` ends it."""

    def stage(self, name: str, total: int | None = None) -> Callable[[int], None]: ...

    def done(self, name: str) -> None: ...


class Quiet:
    """The Reporter that tells nothing (the default)."""

    def stage(self, name: str, total: int | None = None) -> Callable[[int], None]:
        return lambda n: None

    def done(self, name: str) -> None:
        pass
