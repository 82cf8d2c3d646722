"""The application layer's own refusals of what a request asks for, each with the code clients see (a
kb.errors.Problem: the API codes it in kb.schema.errors.with_code, the CLI prints it)."""

from __future__ import annotations

from kb.errors import Problem


class BadRequest(Problem):
    """An argument no answer can be made of (a negative page size, a cursor of another list)."""

    code = "BAD_INPUT"


class OverLimit(Problem):
    """An argument past one of the service's bounds (a page, a subgraph's depth): ask for less."""

    code = "LIMIT_EXCEEDED"
