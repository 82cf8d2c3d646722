"""One line on stderr and a non-zero exit for every expected failure."""

from __future__ import annotations

import functools
import sys

import typer

from kb.db.migrate import SchemaOutOfDate
from kb.errors import Problem


class CliProblem(Exception):
    pass


EXPECTED: tuple[type[BaseException], ...] = (CliProblem, Problem, SchemaOutOfDate)


def expected(*more: type[BaseException]):
    """Decorator: turn expected exceptions into ``error: ...`` and exit code 1."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except EXPECTED + more as exc:
                print(f"error: {exc}", file=sys.stderr)
                raise typer.Exit(1) from None

        return inner

    return wrap
