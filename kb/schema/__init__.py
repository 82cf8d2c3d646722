"""The GraphQL schema (strawberry): types, the query root, limits, error codes."""

from __future__ import annotations

from functools import cache

import strawberry
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache

from kb.schema.circuit_types import CircuitMutation
from kb.schema.claim_query import ClaimQuery
from kb.schema.limits import MAX_TOKENS, RequestLimits
from kb.schema.live_types import LiveQuery
from kb.schema.mutation import ClaimMutation
from kb.schema.query import GraphQuery
from kb.schema.render_types import RenderMutation, RenderQuery


@strawberry.type
class Query(GraphQuery, ClaimQuery, RenderQuery, LiveQuery):
    pass


@strawberry.type
class Mutation(ClaimMutation, RenderMutation, CircuitMutation):
    pass


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        """Expected errors are answers, not incidents; unexpected ones are logged where they are masked
        (kb.schema.errors.with_code), so nothing is logged twice or with a traceback for a NOT_FOUND."""


@cache
def build_schema() -> strawberry.Schema:
    """The schema (built once: strawberry's relay fields may not be converted twice)."""
    return Schema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: ParserCache(maxsize=256),
            lambda: AddValidationRules([RequestLimits]),
            lambda: ValidationCache(maxsize=256),
        ],
    )
