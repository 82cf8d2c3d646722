"""Limits on what one request may ask, computed in time linear in the document.

Tokens are capped when parsing (strawberry's MaxTokensLimiter). Then, once per document (cached by its text):
fragment definitions and spreads are counted, and depth, aliases and selections are computed with every
fragment analysed once (memoised), so a fragment spread twice at each of 190 levels costs 190 steps, not 2^190.
Introspection (``__schema``, ``__type``) is exempt from the depth limit, not from the others.

Then, before any resolver runs, the cost: an estimate of the number of result nodes (the product of ``first``,
list lengths and ``subgraph``'s ``perNode^depth`` along each path, summed over fields and aliases), refused
over the budget (``KB_QUERY_COST_BUDGET``). The cost depends on variables only through a few arguments; it is
computed once per document and values of those variables (cached), again with each fragment costed once.
Every refusal carries extensions.code LIMIT_EXCEEDED.

The estimate counts a list of unknown length as ``DEFAULT_LIST`` items. Where one item can be large (a circuit
revision's edge list: up to 2,000 edges with 2,000-character notes, 4 MB), the resolvers also count what they
return at its real, stored size (``AnswerSize``, per request): past ``KB_ANSWER_MAX_BYTES`` the request is refused
with LIMIT_EXCEEDED (``reason: TOO_LARGE``) before the lists are read, so that ``revisions { edges { note } }`` of
a circuit renamed 30 times is refused rather than answered with 30 copies of its edges.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    get_named_type,
)
from graphql.language import EnumValueNode, ObjectValueNode

from kb.schema.errors import CodedError

MAX_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 2000
MAX_FRAGMENTS = 100  # fragment definitions in a document
MAX_SPREADS = 300  # fragment spreads written in a document
MAX_SELECTIONS = 5000  # fields after expanding every fragment (what an executor would collect)
DEFAULT_BUDGET = 50_000
MAX_IDS = 100  # nodes(ids:) and neurons(keys:)

INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
DEFAULT_PAGE = 10  # kb.schema.pagination.DEFAULT_PAGE
DEFAULT_LIST = 10  # a list field with no size argument and no entry below
PATH_EDGES = 32  # a path has at most one edge per pair of consecutive layers
PATH_SEARCH = 12_000  # a path searches the model's graph (0.4-2 s across many layers): counted as so many values
KERNEL = 81  # a kernel is a small matrix (9x9 at most here): counted as that many values
# Lists whose length is known to be bounded otherwise than by DEFAULT_LIST: (type, field) -> length.
LIST_SIZES = {
    ("Model", "layers"): 40,
    ("Layer", "visualizations"): 1024,
    ("Query", "models"): 20,
    ("Model", "showcase"): 24,  # kb.schema.types.SHOWCASE_MAX
}
# Lists whose length was already counted by their parent field (connections, subgraphs, paths).
COUNTED = {"edges", "nodes"}
COST_ARGUMENTS = frozenset({"first", "depth", "perNode", "roots", "ids", "keys", "direction"})


def limit(message: str) -> CodedError:
    return CodedError(message, "LIMIT_EXCEEDED")


DEFAULT_ANSWER_BYTES = 8_000_000


class AnswerSize:
    """The bytes of large stored lists one request's answer holds, counted at their real sizes by the resolvers
    that return them (before reading them where the size is stored); refused past ``limit``."""

    def __init__(self, limit: int = DEFAULT_ANSWER_BYTES):
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def charge(self, size: int, what: str) -> None:
        with self.lock:
            self.used += size
            used = self.used
        if used > self.limit:
            raise CodedError(
                f"this answer would hold more than {self.limit:,} bytes ({what}: {size:,} bytes): ask for fewer "
                "revisions, circuits or aliases, or leave out the edges",
                "LIMIT_EXCEEDED",
                reason="TOO_LARGE",
                bytes=used,
                limit=self.limit,
            )


# A cost's cache key: (operation name, the frozen values of the variables the cost reads, by name).
CostKey = tuple[str | None, tuple[object, ...]]


@dataclass
class _Shape:
    depth: int = 0
    aliases: int = 0
    selections: int = 0


@dataclass
class Analysis:
    """What the limits need of one document, computed once."""

    errors: list[CodedError]
    fragments: dict[str, FragmentDefinitionNode]
    operations: list[OperationDefinitionNode]
    cost_variables: frozenset[str]  # variables that arguments of the cost use
    has_nul: bool  # a string literal holds U+0000
    costs: OrderedDict[CostKey, int | str] = field(default_factory=OrderedDict)  # -> Limits.cost's answer


def _spreads_and_literals(node: Node, counts: list[int]) -> None:
    """Counts spreads (counts[0]) and NULs in string literals (counts[1]) below a definition, iteratively."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, FragmentSpreadNode):
            counts[0] += 1
            continue
        if isinstance(n, StringValueNode):
            counts[1] += "\x00" in n.value
            continue
        for key in n.keys:
            value: Any = getattr(n, key, None)  # a node, a tuple of nodes, or a leaf (a str, an enum...)
            if isinstance(value, tuple | list):
                stack.extend(v for v in value if hasattr(v, "keys"))
            elif hasattr(value, "keys") and key != "loc":
                stack.append(value)


class _Walker:
    """Depth, aliases and selections of selection sets, each fragment analysed once per (fragment, introspection)."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]):
        self.fragments = fragments
        self.memo: dict[tuple[str, bool], _Shape] = {}
        self.busy: set[tuple[str, bool]] = set()

    def shape(self, selection_set: SelectionSetNode | None, introspection: bool) -> _Shape:
        out = _Shape()
        if selection_set is None:
            return out
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                inner = introspection or sel.name.value in INTROSPECTION_ROOTS
                sub = self.shape(sel.selection_set, inner)
                out.depth = max(out.depth, sub.depth + (0 if inner and introspection else 1))
                out.aliases += sub.aliases + (sel.alias is not None)
                out.selections += sub.selections + 1
            elif isinstance(sel, InlineFragmentNode | FragmentSpreadNode):  # graphql-core has no other selection
                if isinstance(sel, InlineFragmentNode):
                    sub = self.shape(sel.selection_set, introspection)
                else:
                    sub = self.fragment(sel.name.value, introspection)
                out.depth = max(out.depth, sub.depth)
                out.aliases += sub.aliases
                out.selections += sub.selections
        return out

    def fragment(self, name: str, introspection: bool) -> _Shape:
        key = (name, introspection)
        found = self.memo.get(key)
        if found is not None:
            return found
        fragment = self.fragments.get(name)
        if fragment is None or key in self.busy:  # unknown or cyclic: the standard validation reports it
            return _Shape()
        self.busy.add(key)
        shape = self.shape(fragment.selection_set, introspection)
        self.busy.discard(key)
        self.memo[key] = shape
        return shape


def analyse(document: DocumentNode) -> Analysis:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    errors: list[CodedError] = []
    counts = [0, 0]
    for d in document.definitions:
        _spreads_and_literals(d, counts)
    if len(fragments) > MAX_FRAGMENTS:
        errors.append(limit(f"{len(fragments)} fragment definitions exceed the limit of {MAX_FRAGMENTS}"))
    if counts[0] > MAX_SPREADS:
        errors.append(limit(f"{counts[0]} fragment spreads exceed the limit of {MAX_SPREADS}"))
    cost_variables: set[str] = set()
    if not errors:
        walker = _Walker(fragments)
        for op in operations:
            try:
                shape = walker.shape(op.selection_set, False)
            except RecursionError:
                errors.append(limit("fragments nest too deeply"))
                break
            if shape.depth > MAX_DEPTH:
                errors.append(limit(f"query depth {shape.depth} exceeds the limit of {MAX_DEPTH}"))
            if shape.aliases > MAX_ALIASES:
                errors.append(limit(f"{_n(shape.aliases)} aliases exceed the limit of {MAX_ALIASES}"))
            if shape.selections > MAX_SELECTIONS:
                errors.append(
                    limit(
                        f"{_n(shape.selections)} fields once fragments are expanded exceed the limit of "
                        f"{MAX_SELECTIONS:,}"
                    )
                )
        for d in document.definitions:
            _cost_variables(d, cost_variables)
    return Analysis(errors, fragments, operations, frozenset(cost_variables), counts[1] > 0)


def _n(value: int) -> str:
    return f"{value:,}" if value < 10**15 else f"10^{math.log10(value):.0f}"


def _cost_variables(node: Node, out: set[str]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, FieldNode):
            for arg in n.arguments or ():
                if arg.name.value in COST_ARGUMENTS and isinstance(arg.value, VariableNode):
                    out.add(arg.value.name.value)
            if n.selection_set is not None:
                stack.append(n.selection_set)
        elif isinstance(n, InlineFragmentNode | OperationDefinitionNode | FragmentDefinitionNode):
            stack.append(n.selection_set)
        elif hasattr(n, "selections"):
            stack.extend(n.selections)


class _Cost:
    """The cost of one operation with given variables; each fragment costed once."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        defaults: dict[str, Any],
    ):
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.defaults = defaults
        self.memo: dict[str, int] = {}
        self.busy: set[str] = set()

    def value(self, node: ValueNode | None) -> Any:
        """An argument's value as far as the cost reads it: variables' values, ints, lists, enums and strings."""
        if node is None:
            return None
        if isinstance(node, VariableNode):
            name = node.name.value
            return self.variables[name] if name in self.variables else self.defaults.get(name)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, ListValueNode):
            return [self.value(v) for v in node.values]
        if isinstance(node, EnumValueNode | StringValueNode):
            return node.value
        if isinstance(node, ObjectValueNode):
            return {}
        return None

    def selection_set(self, parent: GraphQLNamedType | None, selection_set: SelectionSetNode) -> int:
        total = 0
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                total += self.field(parent, sel)
            elif isinstance(sel, InlineFragmentNode):
                t = self.schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                total += self.selection_set(t or parent, sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):  # graphql-core has no other selection
                total += self.fragment(sel.name.value)
        return total

    def fragment(self, name: str) -> int:
        if name in self.memo:
            return self.memo[name]
        fragment = self.fragments.get(name)
        if fragment is None or name in self.busy:
            return 0
        self.busy.add(name)
        t = self.schema.get_type(fragment.type_condition.name.value)
        cost = self.selection_set(t, fragment.selection_set) if t is not None else 0
        self.busy.discard(name)
        self.memo[name] = cost
        return cost

    def field(self, parent: GraphQLNamedType | None, node: FieldNode) -> int:
        name = node.name.value
        if name.startswith("__"):
            return self.introspection(node)
        fields = getattr(parent, "fields", None) or {}  # none on a scalar or a union, no root for a subscription
        definition = fields.get(name)
        if definition is None or parent is None:
            return 1
        args = {a.name.value: self.value(a.value) for a in node.arguments or ()}
        for arg_name, arg in definition.args.items():
            if arg_name not in args and arg.default_value is not None:
                args[arg_name] = arg.default_value
        many = self.multiplier(parent.name, name, definition.type, args)
        if node.selection_set is None:
            if name == "kernel":
                return KERNEL
            return 1
        below = self.selection_set(get_named_type(definition.type), node.selection_set)
        return (PATH_SEARCH if parent.name == "Query" and name == "path" else 1) + many * below

    def multiplier(self, parent: str, name: str, gtype: GraphQLOutputType, args: dict[str, Any]) -> int:
        named = get_named_type(gtype)
        if "first" in args and named.name.endswith("Connection"):
            return _int(args["first"], DEFAULT_PAGE)
        if parent == "Query" and name == "subgraph":
            roots = args.get("roots")
            per_node, depth = _int(args.get("perNode"), 5), _int(args.get("depth"), 1)
            branch = 2 if str(args.get("direction", "")).upper().endswith("BOTH") else 1
            reach: int = sum((branch * per_node) ** d for d in range(min(depth, 64) + 1))
            return max(1, len(roots) if isinstance(roots, list) else 1) * reach
        if parent == "Query" and name == "path":
            return PATH_EDGES
        for arg in ("ids", "keys"):
            if isinstance(args.get(arg), list):
                if parent == "Query" and name in ("nodes", "neurons") and len(args[arg]) > MAX_IDS:
                    raise _TooMany(f"{name} takes at most {MAX_IDS} {arg} (asked for {len(args[arg])})")
                return max(1, len(args[arg]))
        if not _is_list(gtype) or (name in COUNTED and parent.endswith(("Connection", "Subgraph", "Path"))):
            return 1
        return LIST_SIZES.get((parent, name), DEFAULT_LIST)

    def introspection(self, node: FieldNode) -> int:
        """The schema is small and fixed: introspection counts one per field written, expanded."""
        if node.selection_set is None:
            return 1
        return 1 + self._flat(node.selection_set)

    def _flat(self, selection_set: SelectionSetNode) -> int:
        total = 0
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                total += 1 + (self._flat(sel.selection_set) if sel.selection_set else 0)
            elif isinstance(sel, InlineFragmentNode):
                total += self._flat(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):  # graphql-core has no other selection
                key = "\x00" + sel.name.value
                if key not in self.memo:
                    fragment = self.fragments.get(sel.name.value)
                    if fragment is None or key in self.busy:
                        continue
                    self.busy.add(key)
                    self.memo[key] = self._flat(fragment.selection_set)
                    self.busy.discard(key)
                total += self.memo[key]
        return total


class _TooMany(Exception):
    pass


def _is_list(t: GraphQLType) -> bool:
    while isinstance(t, GraphQLNonNull):
        t = t.of_type
    return isinstance(t, GraphQLList)


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return max(value, 0)


class Limits:
    """Per-document analyses (LRU by the document's text) and the cost check; thread-safe."""

    def __init__(self, schema: GraphQLSchema, budget: int = DEFAULT_BUDGET, size: int = 512):
        self.schema = schema
        self.budget = budget
        self.size = size
        self.analyses: OrderedDict[str, Analysis] = OrderedDict()
        self.lock = threading.Lock()

    def analysis(self, query: str, document: DocumentNode) -> Analysis:
        with self.lock:
            found = self.analyses.get(query)
            if found is not None:
                self.analyses.move_to_end(query)
                return found
        found = analyse(document)
        with self.lock:
            self.analyses[query] = found
            if len(self.analyses) > self.size:
                self.analyses.popitem(last=False)
        return found

    def cost(self, analysis: Analysis, operation_name: str | None, variables: dict[str, Any] | None) -> int | str:
        """The estimated cost, or why the request is refused before any cost (a list argument too long)."""
        variables = variables or {}
        key: CostKey = (operation_name, tuple(_freeze(variables.get(v)) for v in sorted(analysis.cost_variables)))
        found = analysis.costs.get(key)
        if found is not None:
            return found
        ops = analysis.operations
        if operation_name is not None:
            ops = [o for o in ops if o.name and o.name.value == operation_name]
        if len(ops) != 1:
            return 0  # the executor reports the missing or ambiguous operation
        op = ops[0]
        defaults = {
            d.variable.name.value: _Cost(self.schema, {}, {}, {}).value(d.default_value)
            for d in op.variable_definitions or ()
        }
        root = {"query": self.schema.query_type, "mutation": self.schema.mutation_type}.get(op.operation.value)
        cost: int | str
        try:
            cost = _Cost(self.schema, analysis.fragments, variables, defaults).selection_set(root, op.selection_set)
        except _TooMany as exc:
            cost = str(exc)
        with self.lock:
            analysis.costs[key] = cost
            if len(analysis.costs) > 64:
                analysis.costs.popitem(last=False)
        return cost

    def refusal(self, cost: int | str) -> CodedError | None:
        if isinstance(cost, str):
            return limit(cost)
        if cost <= self.budget:
            return None
        return CodedError(
            f"this query may return about {_n(cost)} values, over the budget of {self.budget:,}: ask for fewer "
            "(smaller first, perNode or depth; fewer aliases)",
            "LIMIT_EXCEEDED",
            cost=cost if cost < 10**15 else None,
            budget=self.budget,
        )


def _freeze(value: Any) -> object:
    """A variable's value as the cost reads it, hashable: a list by its length, an input object not at all."""
    if isinstance(value, list):
        return ("list", len(value))
    if isinstance(value, dict):
        return None
    return value


def has_nul(value: Any) -> bool:
    """A NUL anywhere in JSON variables (PostgreSQL text cannot hold one)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


NUL_MESSAGE = "text may not contain NUL (U+0000) characters"
