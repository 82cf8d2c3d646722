"""The GraphQL schema (strawberry): types, the query root, limits, error codes."""

from __future__ import annotations

import copy
import functools
from functools import cache
from typing import Any

import strawberry
from graphql import GraphQLError, OperationDefinitionNode, parse
from strawberry.extensions import MaxTokensLimiter, ParserCache
from strawberry.types import ExecutionContext, ExecutionResult

from kb.schema.claim_query import ClaimQuery
from kb.schema.deadline import DEADLINE
from kb.schema.errors import CodedError, RequestTimeout, enum_values, with_code
from kb.schema.experiment_types import ExperimentQuery
from kb.schema.guard import CachedValidation, Guard
from kb.schema.limits import DEFAULT_BUDGET, MAX_TOKENS, Limits
from kb.schema.live_types import LiveQuery, LiveSubscription
from kb.schema.mutation import CircuitMutation, ClaimMutation
from kb.schema.offloop import OffLoop
from kb.schema.query import GraphQuery
from kb.schema.render_types import ExperimentMutation, RenderMutation, RenderQuery


@strawberry.type
class Query(GraphQuery, ClaimQuery, RenderQuery, LiveQuery, ExperimentQuery):
    pass


@strawberry.type
class Mutation(ClaimMutation, RenderMutation, CircuitMutation, ExperimentMutation):
    pass


class Schema(strawberry.Schema):
    """Executes off the event loop when the request's context names an OffLoop (kb.web.app's do), else inline."""

    limits: Limits  # this schema's: its cost budget and its cache of analysed documents
    enum_values: dict[str, list[str]]  # enum type name -> its values, for errors about an enum value

    def with_code(self, error: GraphQLError) -> GraphQLError:
        """kb.schema.errors.with_code with this schema's enums: an error about an enum value lists its values."""
        return with_code(error, self.enum_values)

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Expected errors are answers, not incidents; unexpected ones are logged where they are masked
        (kb.schema.errors.with_code), so nothing is logged twice or with a traceback for a NOT_FOUND."""

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> ExecutionResult:
        run = functools.partial(super().execute, query, variable_values, context_value, *args, **kwargs)
        offloop: OffLoop | None = getattr(context_value, "offloop", None)
        if offloop is None or DEADLINE.get() is not None:
            return await run()
        try:
            result: ExecutionResult = await offloop.call(
                run, is_async=True, abandon=not _is_mutation(query, args, kwargs)
            )
            return result
        except RequestTimeout as exc:
            return ExecutionResult(data=None, errors=[CodedError(str(exc), "TIMEOUT")])


@functools.lru_cache(maxsize=512)
def _operations(query: str) -> tuple[tuple[str | None, str], ...]:
    try:
        document = parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError:
        return ()
    return tuple(
        (d.name.value if d.name else None, d.operation.value)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    )


def operation_type(query: str, name: str | None = None) -> str:
    """query, mutation or subscription: the type of the document's operation named ``name`` (else its first), from
    the same cached parse as ``_is_mutation``; "unknown" where the document does not parse or names none."""
    for op_name, kind in _operations(query):
        if name is None or op_name == name:
            return kind
    return "unknown"


def _is_mutation(query: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the operation to run is a mutation (parsed once per document)."""
    if not isinstance(query, str):
        return False
    name = kwargs.get("operation_name", args[1] if len(args) > 1 else None)
    ops = _operations(query)
    return any(kind == "mutation" and (name is None or n == name) for n, kind in ops)


@cache
def _converted() -> Schema:
    """The types converted to graphql-core's, once per process: strawberry's relay fields may not be converted
    twice. It holds no configuration: each app's schema (build_schema) is a copy with limits of its own."""
    return Schema(query=Query, mutation=Mutation, subscription=LiveSubscription)


def build_schema(budget: int = DEFAULT_BUDGET) -> Schema:
    """A schema of its own, as an app builds it with its settings (``budget``: KB_QUERY_COST_BUDGET): its limits
    (budget and cache of analysed documents), the extensions that apply them, and its enums' values for errors.
    The converted types are shared with every other schema of the process (built once, never changed), so that two
    apps in one process (the tests build many) each enforce their own limits."""
    schema = copy.copy(_converted())
    limits = Limits(schema._schema, budget)
    schema.limits = limits
    schema.extensions = (
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: ParserCache(maxsize=256),
        lambda: Guard(limits),
        lambda: CachedValidation(maxsize=256),
    )
    schema.enum_values = enum_values(schema._schema)
    return schema
