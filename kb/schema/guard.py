"""The schema extension that applies kb.schema.limits to every operation strawberry executes.

Before validation: the document's limits (fragments, spreads, depth, aliases, expanded size, NUL literals),
refused there so that no other rule walks a refused document. Before execution: the cost with the request's
variables against the budget, and NULs in variables. The cost goes back to the client in
``extensions.cost`` (as GitHub's and Shopify's APIs tell theirs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension, ValidationCache

from kb.schema.errors import bad_input
from kb.schema.limits import NUL_MESSAGE, Limits, has_nul


class Guard(SchemaExtension):
    def __init__(self, limits: Limits, **kwargs: Any):
        super().__init__(**kwargs)
        self.limits = limits
        self.cost: int | str | None = None

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.graphql_document is not None and ec.query:
            analysis = self.limits.analysis(ec.query, ec.graphql_document)
            if analysis.errors:
                ec.pre_execution_errors = list(analysis.errors)
            elif analysis.has_nul:
                ec.pre_execution_errors = [bad_input(NUL_MESSAGE)]
        yield

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.result is None and ec.graphql_document is not None and ec.query:
            analysis = self.limits.analysis(ec.query, ec.graphql_document)
            self.cost = self.limits.cost(analysis, ec.operation_name, ec.variables)
            refusal = self.limits.refusal(self.cost)
            if refusal is None and has_nul(ec.variables):
                refusal = bad_input(NUL_MESSAGE)
            if refusal is not None:
                ec.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield

    def get_results(self) -> dict[str, Any]:
        if not isinstance(self.cost, int):
            return {}
        return {"cost": {"estimated": self.cost, "budget": self.limits.budget}}


class CachedValidation(ValidationCache):
    """strawberry's cached validation, skipped for a document Guard has already refused."""

    def on_validate(self) -> Iterator[None]:
        if self.execution_context.pre_execution_errors:
            yield
            return
        yield from super().on_validate()
