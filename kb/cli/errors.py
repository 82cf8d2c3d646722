"""One line on stderr and a non-zero exit for every expected failure."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from kb.db.migrate import SchemaOutOfDate
from kb.errors import Problem


class CliProblem(Exception):
    pass


EXPECTED: tuple[type[BaseException], ...] = (CliProblem, Problem, SchemaOutOfDate)

P = ParamSpec("P")
R = TypeVar("R")


def expected(*more: type[BaseException]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: turn expected exceptions into ``error: ...`` and exit code 1."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except EXPECTED + more as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise typer.Exit(1) from None

        return inner

    return wrap
