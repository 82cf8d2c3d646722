"""Progress for long commands, on stderr: rich bars on a terminal, plain one-line phase messages otherwise
(a pipe, a log file, CI), so that logs stay readable and still say what is running.

``Phases`` has the importer's Reporter interface: ``stage(name, total)`` returns ``tick(n)``; ``done(name)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_EVERY_S = 15.0  # a plain-text progress line at most this often during one long phase


class Phases:
    def __init__(self, console: Console | None = None, plain_every_s: float = PLAIN_EVERY_S):
        self.console = console or Console(stderr=True)
        self.bars = self.console.is_terminal and not self.console.is_dumb_terminal
        self.plain_every_s = plain_every_s
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.current: str | None = None

    def __enter__(self) -> Phases:
        if self.bars:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<30}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.__exit__(exc_type, exc, tb)
            self.progress = None

    def line(self, text: str) -> None:
        """A message that stays (above the bars on a terminal)."""
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stage(self, name: str, total: int | None = None) -> Callable[[int], None]:
        """Start a phase; returns ``tick(n)`` to advance it by n of ``total``."""
        if self.progress is not None:
            task = self.progress.add_task(name, total=total)
            self.tasks[name] = task
            return lambda n: self.progress.advance(task, n) if self.progress is not None else None
        self.line(f"{name}: {total:,}…" if total else f"{name}…")
        state = {"done": 0, "last": time.monotonic()}

        def tick(n: int) -> None:
            state["done"] += n
            now = time.monotonic()
            if total and now - state["last"] >= self.plain_every_s:
                state["last"] = now
                self.line(f"{name}: {state['done']:,}/{total:,} ({100 * state['done'] / total:.0f}%)")

        return tick

    def next(self, name: str, total: int | None = None) -> Callable[[int], None]:
        """Finish the phase the last ``next`` started and start this one (phases in a row, one bar at a time)."""
        if self.current is not None:
            self.done(self.current)
        self.current = name
        return self.stage(name, total)

    def update(self, name: str, completed: float, total: float | None = None, description: str | None = None) -> None:
        """Set a bar's position (for progress that is polled rather than counted)."""
        if self.progress is not None and name in self.tasks:
            self.progress.update(self.tasks[name], completed=completed, total=total, description=description or name)

    def done(self, name: str) -> None:
        if self.progress is not None and name in self.tasks:
            self.progress.remove_task(self.tasks.pop(name))
