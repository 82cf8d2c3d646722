"""How every page runs its GraphQL: one function, so that no page can drop a query's errors.

``run_query`` executes a query (or a form's mutation) on the schema with the page's context and returns its data.
When the answer has errors they are coded (kb.schema.errors.with_code), logged once with the query's name, and
raised as ``QueryFailed``. A page either catches it and says on the page what could not be shown
(``Pages.part`` in kb.web.pages), or lets it reach the application's handler, which answers the message page
with the code's status (kb.web.app). There is no way to get a result whose errors nobody looked at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from graphql import GraphQLError

from kb.schema.errors import with_code

if TYPE_CHECKING:
    from kb.claims.accounts import Account
    from kb.schema import Schema
    from kb.schema.context import Context

# The forms' contexts: a kb.schema.context.Context acting as the account (None: nobody signed in)
ContextFor: TypeAlias = "Callable[[Account | None], Context]"

log = logging.getLogger("kb.web.pages")

# What the reader's own request causes (a mistyped URL, a refused form, too large an /explore): logged at INFO.
# Anything else (a timeout, an internal error), and any failure of a part of a page asked with the server's own
# values (server_side: a query the page itself made too large), is the server's to fix: logged as a WARNING.
READERS = frozenset(
    {
        "NOT_FOUND",
        "BAD_KEY",
        "BAD_INPUT",
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "EDIT_CONFLICT",
        "RATE_LIMITED",
        "LIMIT_EXCEEDED",
    }
)


class QueryFailed(Exception):
    """A page's query answered errors: the query's name, its coded errors, and the first one's code and message."""

    def __init__(self, name: str, errors: list[GraphQLError]):
        self.name = name
        self.errors = errors
        self.extensions = dict(errors[0].extensions or {})
        self.code: str = self.extensions.get("code", "BAD_INPUT")
        self.message = errors[0].message
        super().__init__(f"{name}: {self.code}: {self.message}")


def failed(
    name: str,
    errors: list[GraphQLError],
    server_side: bool = False,
    code: Callable[[GraphQLError], GraphQLError] = with_code,
) -> QueryFailed:
    """The errors coded (by ``code``: the schema's own, where it answered them) and logged once (``server_side``:
    whatever the code, the reader did not cause it)."""
    exc = QueryFailed(name, [code(e) for e in errors])
    level = logging.INFO if exc.code in READERS and not server_side else logging.WARNING
    text = "; ".join(f"{(e.extensions or {}).get('code')}: {e.message}" for e in exc.errors)
    log.log(level, "page query %s failed: %s", name, text)
    return exc


async def run_query(
    schema: Schema,
    context: Context,
    name: str,
    query: str,
    variables: dict[str, Any] | None = None,
    server_side: bool = False,
) -> dict[str, Any]:
    """The query's data; QueryFailed (logged) when the answer has errors."""
    result = await schema.execute(query, variable_values=variables or {}, context_value=context)
    if result.errors:
        raise failed(name, list(result.errors), server_side, schema.with_code)
    assert result.data is not None  # an answer without errors has its data
    return result.data
