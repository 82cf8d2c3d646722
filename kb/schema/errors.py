"""Coded GraphQL errors: every expected failure carries ``extensions.code`` (DESIGN.md's list).

The one place where failures become codes is ``with_code``, applied to every error of every response (the
/graphql endpoint and the pages): a domain ``Problem`` raised anywhere below a resolver keeps its code and
message, a cancelled statement is a TIMEOUT, a validation or syntax error is BAD_INPUT (LIMIT_EXCEEDED for the
token cap), and anything else is logged here and masked as INTERNAL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from graphql import GraphQLEnumType, GraphQLError, GraphQLSchema, GraphQLSyntaxError

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
    "TIMEOUT",
    "UNAVAILABLE",
    "INTERNAL",
)

_ENUM_ERROR = re.compile(r"(?:does not exist in|Enum) '(\w+)'(?: enum)?|Enum '(\w+)' cannot represent")


class CodedError(GraphQLError):
    def __init__(self, message: str, code: str, **extensions: Any):
        assert code in CODES, code
        super().__init__(message, extensions={"code": code, **{k: v for k, v in extensions.items() if v is not None}})


class RequestTimeout(Problem):
    code = "TIMEOUT"


def not_found(message: str, suggestion: str | None = None) -> CodedError:
    return CodedError(message, "NOT_FOUND", suggestion=suggestion)


def bad_input(message: str) -> CodedError:
    return CodedError(message, "BAD_INPUT")


def limit(message: str) -> CodedError:
    return CodedError(message, "LIMIT_EXCEEDED")


def coded(exc: Problem) -> CodedError:
    """Any domain failure (kb.errors.Problem) as the GraphQL error the client sees."""
    return CodedError(str(exc), exc.code, **exc.extensions)


def _timed_out(exc: BaseException) -> bool:
    """A statement cancelled by PostgreSQL's statement_timeout or interrupted in SQLite at the deadline."""
    inner = getattr(exc, "orig", None) or exc
    name = type(inner).__name__
    return name == "QueryCanceled" or (name == "OperationalError" and "interrupted" in str(inner))


def enum_values(schema: GraphQLSchema) -> dict[str, list[str]]:
    """Enum type name -> its values, of the schema whose errors are coded (kb.schema.Schema.with_code): an error
    about an enum value lists the values allowed."""
    return {
        name: list(t.values)
        for name, t in schema.type_map.items()
        if isinstance(t, GraphQLEnumType) and not name.startswith("__")
    }


def _with_values(message: str, enums: Mapping[str, Sequence[str]]) -> str:
    m = _ENUM_ERROR.search(message)
    if not m:
        return message
    values = enums.get(m.group(1) or m.group(2))
    if not values or "allowed" in message:
        return message
    return f"{message.rstrip('.')}. Allowed values: {', '.join(values)}."


def _copy(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        original_error=None,
        extensions=extensions,
    )


def with_code(error: GraphQLError, enums: Mapping[str, Sequence[str]] | None = None) -> GraphQLError:
    """The error as the client sees it: with a code, and masked (INTERNAL) if nobody expected it. ``enums`` (enum
    type name -> values: the schema's, kb.schema.Schema.with_code) adds the values allowed to an error about one.

    Unexpected exceptions are logged here with their traceback; the response never carries a traceback,
    SQL or a path.
    """
    if error.extensions and "code" in error.extensions:
        return error
    original = error.original_error
    if isinstance(original, GraphQLError) and original.extensions and "code" in original.extensions:
        return _copy(error, original.message, dict(original.extensions))
    if isinstance(original, Problem):
        return _copy(error, str(original), {"code": original.code, **original.extensions})
    if type(original).__name__ == "GlobalIDValueError":  # strawberry.relay: an ID of no type of this API
        return _copy(error, f"not an ID of this API: {original}", {"code": "BAD_INPUT"})
    if original is not None and _timed_out(original):
        return _copy(error, "the database took too long to answer (statement timeout)", {"code": "TIMEOUT"})
    if original is None or isinstance(original, GraphQLError):
        if isinstance(error, GraphQLSyntaxError) or error.message.startswith("Syntax Error"):
            code = "LIMIT_EXCEEDED" if "tokens" in error.message else "BAD_INPUT"
        elif error.message.startswith("Maximum introspection depth"):  # graphql-core's nesting limit
            code = "LIMIT_EXCEEDED"
        else:
            code = "BAD_INPUT"  # validation: unknown fields, wrong argument or variable types...
        return _copy(error, _with_values(error.message, enums or {}), {**(error.extensions or {}), "code": code})
    log.error("unexpected error at %s", ".".join(map(str, error.path or [])) or "operation", exc_info=original)
    return _copy(error, "internal error", {"code": "INTERNAL"})
