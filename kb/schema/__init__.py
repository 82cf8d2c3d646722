"""The GraphQL schema (strawberry): types, the query root, limits, error codes."""

from __future__ import annotations

from functools import cache

import strawberry
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache

from kb.schema.limits import MAX_TOKENS, RequestLimits
from kb.schema.query import Query


@cache
def build_schema() -> strawberry.Schema:
    """The schema (built once: strawberry's relay fields may not be converted twice)."""
    return strawberry.Schema(
        query=Query,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: ParserCache(maxsize=256),
            lambda: AddValidationRules([RequestLimits]),
            lambda: ValidationCache(maxsize=256),
        ],
    )

