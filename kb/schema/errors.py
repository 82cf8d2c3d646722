"""Coded GraphQL errors: every expected failure carries ``extensions.code`` (DESIGN.md's list)."""

from __future__ import annotations

import logging

from graphql import GraphQLError, GraphQLSyntaxError

from kb.errors import Problem

log = logging.getLogger("kb.api")

CODES = (
    "NOT_FOUND",
    "BAD_KEY",
    "BAD_INPUT",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "EDIT_CONFLICT",
    "RATE_LIMITED",
    "LIMIT_EXCEEDED",
    "TOO_LARGE",
    "INTERNAL",
)


class CodedError(GraphQLError):
    def __init__(self, message: str, code: str, **extensions):
        assert code in CODES, code
        super().__init__(message, extensions={"code": code, **{k: v for k, v in extensions.items() if v is not None}})


def not_found(message: str, suggestion: str | None = None) -> CodedError:
    return CodedError(message, "NOT_FOUND", suggestion=suggestion)


def bad_input(message: str) -> CodedError:
    return CodedError(message, "BAD_INPUT")


def limit(message: str) -> CodedError:
    return CodedError(message, "LIMIT_EXCEEDED")


def coded(exc: Problem) -> CodedError:
    """Any domain failure (kb.errors.Problem) as the GraphQL error the client sees."""
    return CodedError(str(exc), exc.code, **exc.extensions)


def with_code(error: GraphQLError) -> GraphQLError:
    """The error as the client sees it: with a code, and masked (INTERNAL) if nobody expected it.

    Unexpected exceptions are logged here with their traceback; the response never carries a traceback,
    SQL or a path.
    """
    if error.extensions and "code" in error.extensions:
        return error
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        if isinstance(error, GraphQLSyntaxError) or error.message.startswith("Syntax Error"):
            code = "LIMIT_EXCEEDED" if "tokens" in error.message else "BAD_INPUT"
        else:
            code = "BAD_INPUT"  # validation: unknown fields, wrong argument or variable types...
        return GraphQLError(
            error.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            original_error=None,
            extensions={**(error.extensions or {}), "code": code},
        )
    log.error("unexpected error at %s", ".".join(map(str, error.path or [])) or "operation", exc_info=original)
    return GraphQLError(
        "internal error",
        error.nodes,
        error.source,
        error.positions,
        error.path,
        original_error=None,
        extensions={"code": "INTERNAL"},
    )
