"""Limits on what one request may ask.

Depth and aliases are a validation rule (cached with the document's validation); tokens are capped when
parsing (strawberry's MaxTokensLimiter); keys per request and page sizes are checked by the resolvers.
Every refusal carries extensions.code LIMIT_EXCEEDED (kb.schema.errors.with_code codes the parser's).
"""

from __future__ import annotations

from graphql import ValidationRule
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationDefinitionNode

from kb.schema.errors import CodedError

MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 2000


def _walk(context, selection_set, depth: int, seen: set[str]) -> tuple[int, int]:
    """(max depth, alias count) below a selection set, fragments followed once."""
    if selection_set is None:
        return depth, 0
    deepest, aliases = depth, 0
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            aliases += sel.alias is not None
            d, a = _walk(context, sel.selection_set, depth + 1, seen)
        elif isinstance(sel, InlineFragmentNode):
            d, a = _walk(context, sel.selection_set, depth, seen)
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            if name in seen:
                continue
            fragment = context.get_fragment(name)
            if fragment is None:
                continue
            d, a = _walk(context, fragment.selection_set, depth, seen | {name})
        else:
            continue
        deepest, aliases = max(deepest, d), aliases + a
    return deepest, aliases


class RequestLimits(ValidationRule):
    def enter_operation_definition(self, node: OperationDefinitionNode, *_args):
        depth, aliases = _walk(self.context, node.selection_set, 0, set())
        if depth > MAX_DEPTH:
            self.report_error(CodedError(f"query depth {depth} exceeds the limit of {MAX_DEPTH}", "LIMIT_EXCEEDED"))
        if aliases > MAX_ALIASES:
            self.report_error(CodedError(f"{aliases} aliases exceed the limit of {MAX_ALIASES}", "LIMIT_EXCEEDED"))
