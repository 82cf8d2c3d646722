"""Compiled execution of repeated read-only queries: the API's hot path.

The graph a query reads is immutable, and clients send the same few documents with different variables
(e.g. "top-10 inputs of $key"). graphql-core's executor is generic: per field it builds resolve infos,
checks awaitables and completes values through several layers, about 15 µs a field here. For a document
seen before, this module walks a plan compiled once per document instead: attribute reads and direct calls
of the same strawberry resolvers, coerced arguments computed once when they use no variables.

Only what the plan can do exactly is compiled: queries (no mutations), object types (no interfaces or
unions), no directives, no field extensions or permissions, no async resolvers. Everything else, and any
exception while running a plan, falls back to strawberry's normal execution of the same request, which
produces the response, errors and all. The one error a plan answers itself is the usual one: an unknown key
(kb.graph.keys.KeyProblem: BAD_KEY, NOT_FOUND) raised by a root field's resolver, located and coded by the same
functions as strawberry's (graphql-core's ``located_error``, ``kb.schema.errors.with_code``), with the same
null propagation, so an unknown key does not run the resolvers twice; tests check both paths agree on data and
errors. A plan that fails on something else raises Broken (a Fallback): the endpoint counts and logs those.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLFormattedError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableDefinitionNode,
    located_error,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.language import Visitor, visit
from graphql.language.ast import Node as AstNode
from strawberry.relay import GlobalID, Node
from strawberry.types.arguments import convert_arguments
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from kb.db.io_guard import NeedsIO
from kb.errors import Problem
from kb.graph.keys import KeyProblem
from kb.schema.context import Context, Info
from kb.schema.deadline import DEADLINE
from kb.schema.errors import RequestTimeout, with_code
from kb.schema.limits import MAX_TOKENS


class NotCompilable(Exception):
    pass


class Fallback(Exception):
    pass


class Broken(Fallback):
    """The plan failed on an exception it did not expect (a resolver's bug, or strawberry internals that
    changed): strawberry answers the request."""


class FastInfo:
    """What compiled resolvers receive as ``info``: the context, nothing else (anything else -> fallback)."""

    __slots__ = ("context",)

    def __init__(self, context: Context):
        self.context = context


# A field's value: (source, info, variables) -> value. The source is the parent's value (None at the root).
Getter = Callable[[Any, FastInfo, VariableValues], Any]


@dataclass
class FieldPlan:
    key: str  # response key (alias or name)
    get: Getter
    wraps: list[str]  # outermost first: "nonnull" / "list"
    leaf: Callable[[Any], Any] | None  # scalar serializer, or None for objects
    sub: ObjectPlan | None = None
    node: FieldNode | None = None  # where the field is in the document (errors name it)


@dataclass
class ObjectPlan:
    fields: list[FieldPlan] = field(default_factory=list)


@dataclass
class Plan:
    root: ObjectPlan
    operation: OperationDefinitionNode
    variable_definitions: tuple[VariableDefinitionNode, ...] | None
    schema: GraphQLSchema  # graphql-core's, to coerce the variables
    failures: int = 0  # runs that raised Broken (the endpoint logs the first)

    def run(
        self, context: Context, variables: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, list[GraphQLFormattedError]]:
        """(data, errors): the response's data, and its errors (formatted) where a root field's key was unknown."""
        try:
            coerced = get_variable_values(self.schema, self.operation.variable_definitions or [], variables or {})
            if isinstance(coerced, list):  # variable errors: let the normal path report them
                raise Fallback
            return _run_root(self.root, FastInfo(context), coerced)
        except (Fallback, RequestTimeout, NeedsIO):
            raise
        except (Problem, GraphQLError) as exc:  # any other coded error: strawberry reports it, with its context
            raise Fallback from exc
        except Exception as exc:
            raise Broken from exc


def _run_root(
    plan: ObjectPlan, info: FastInfo, variables: VariableValues
) -> tuple[dict[str, Any] | None, list[GraphQLFormattedError]]:
    """The root fields in order, as graphql-core executes them: a key problem (BAD_KEY, NOT_FOUND) raised by a root
    field's resolver makes the field null (and the data null if the field is non-null, with the fields after it
    not run). Other errors may depend on what strawberry's context has and a plan's has not (the request, its
    account): strawberry answers them."""
    _check_deadline()
    out: dict[str, Any] = {}
    errors: list[GraphQLFormattedError] = []
    for f in plan.fields:
        try:
            value = f.get(None, info, variables)
        except KeyProblem as exc:  # resolved from the catalog alone: the same in strawberry's context
            errors.append(with_code(located_error(exc, [f.node] if f.node else None, [f.key])).formatted)
            if f.wraps and f.wraps[0] == "nonnull":
                return None, errors
            out[f.key] = None
            continue
        out[f.key] = _complete(f, f.wraps, value, info, variables)
    return out, errors


def _check_deadline() -> None:
    deadline = DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise RequestTimeout("the request took longer than its time limit; ask for less")


def _run_object(plan: ObjectPlan, source: Any, info: FastInfo, variables: VariableValues) -> dict[str, Any]:
    _check_deadline()
    out: dict[str, Any] = {}
    for f in plan.fields:
        out[f.key] = _complete(f, f.wraps, f.get(source, info, variables), info, variables)
    return out


def _complete(f: FieldPlan, wraps: list[str], value: Any, info: FastInfo, variables: VariableValues) -> Any:
    if wraps and wraps[0] == "nonnull":
        if value is None:
            raise Fallback
        wraps = wraps[1:]
    if value is None:
        return None
    if wraps and wraps[0] == "list":
        rest = wraps[1:]
        return [_complete(f, rest, item, info, variables) for item in value]
    if f.leaf is not None:
        return f.leaf(value)
    assert f.sub is not None  # a field has a serializer or an object plan, one of them (Compiler.object_plan)
    return _run_object(f.sub, value, info, variables)


class Compiler:
    def __init__(self, schema: strawberry.Schema):
        self.schema = schema
        self.gql = schema._schema
        self.rules = specified_rules  # the caller checked kb.schema.limits first

    def compile(self, document: DocumentNode, operation_name: str | None) -> Plan:
        if validate(self.gql, document, self.rules, max_errors=1):
            raise NotCompilable("invalid document")
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name:
            ops = [o for o in ops if o.name and o.name.value == operation_name]
        if len(ops) != 1 or ops[0].operation != OperationType.QUERY:
            raise NotCompilable("one query operation")
        if _has_directives(document):
            raise NotCompilable("directives")
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        query = self.gql.query_type
        if query is None:  # strawberry's schemas always have one
            raise NotCompilable("no query type")
        root = self.object_plan(query, ops[0].selection_set, fragments)
        return Plan(root, ops[0], ops[0].variable_definitions, self.gql)

    def _collect(
        self,
        gtype: GraphQLObjectType,
        selection_set: SelectionSetNode,
        fragments: dict[str, FragmentDefinitionNode],
        out: list[FieldNode],
        seen: set[int | str] | None = None,
    ) -> list[FieldNode]:
        """The fields of a selection set, each fragment spread expanded once (as graphql-core's CollectFields
        does): linear in the document however often fragments spread each other."""
        seen = set() if seen is None else seen
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                if id(sel) not in seen:
                    seen.add(id(sel))
                    out.append(sel)
            elif isinstance(sel, InlineFragmentNode):
                if sel.type_condition and sel.type_condition.name.value != gtype.name:
                    raise NotCompilable("fragment on another type")
                self._collect(gtype, sel.selection_set, fragments, out, seen)
            elif isinstance(sel, FragmentSpreadNode):
                if sel.name.value in seen:
                    continue
                seen.add(sel.name.value)
                frag = fragments[sel.name.value]
                if frag.type_condition.name.value != gtype.name:
                    raise NotCompilable("fragment on another type")
                self._collect(gtype, frag.selection_set, fragments, out, seen)
        return out

    def object_plan(
        self, gtype: GraphQLObjectType, selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
    ) -> ObjectPlan:
        nodes = self._collect(gtype, selection_set, fragments, [])
        keys = [(n.alias or n.name).value for n in nodes]
        if len(set(keys)) != len(keys):
            raise NotCompilable("repeated response keys")
        definition = self.schema.get_type_by_name(gtype.name)
        assert isinstance(definition, StrawberryObjectDefinition)  # gtype is an object type of this schema
        by_name = {self.schema.config.name_converter.get_graphql_name(f): f for f in definition.fields}
        plan = ObjectPlan()
        for node, key in zip(nodes, keys, strict=True):
            name = node.name.value
            if name == "__typename":
                plan.fields.append(FieldPlan(key, _constant(gtype.name), ["nonnull"], _identity))
                continue
            sfield = by_name.get(name)
            gfield = gtype.fields[name]
            if sfield is None:
                raise NotCompilable(f"unknown field {name}")
            if sfield.extensions or sfield.permission_classes or sfield.directives:
                raise NotCompilable(f"field {name} has extensions or permissions")
            wraps, named = _unwrap(gfield.type)
            sub: ObjectPlan | None = None
            leaf: Callable[[Any], Any] | None = None
            if isinstance(named, GraphQLObjectType):
                if node.selection_set is None:
                    raise NotCompilable("object without selections")
                sub = self.object_plan(named, node.selection_set, fragments)
            elif hasattr(named, "serialize"):
                leaf = named.serialize
            else:
                raise NotCompilable(f"abstract type {named}")
            plan.fields.append(FieldPlan(key, self.getter(definition, sfield, gfield, node), wraps, leaf, sub, node))
        return plan

    def getter(
        self, definition: StrawberryObjectDefinition, sfield: StrawberryField, gfield: GraphQLField, node: FieldNode
    ) -> Getter:
        origin = definition.origin
        if sfield.python_name == "_id" and issubclass(origin, Node):  # relay's global ID
            type_name = definition.name
            # FastInfo stands in for strawberry's Info, as for every resolver here (they read only .context)
            return lambda s, i, v: str(
                GlobalID(type_name=type_name, node_id=str(origin.resolve_id(s, info=cast("Info", i))))
            )
        resolver = sfield.base_resolver
        if resolver is None:
            attr = sfield.python_name
            return lambda s, i, v: getattr(s, attr)
        if resolver.is_async:
            raise NotCompilable(f"{sfield.python_name} is async")
        func = resolver.wrapped_func
        assert callable(func)  # a function (strawberry binds a classmethod's)
        params = inspect.signature(func).parameters
        info_parameter = resolver.info_parameter
        wants_info = info_parameter is not None
        info_name = info_parameter.name if info_parameter is not None else ""
        if resolver.root_parameter is not None:
            raise NotCompilable("root parameter")
        uses_variables = _uses_variables(node)
        converter = self.schema.schema_converter
        config = self.schema.config

        def arguments(variables: VariableValues | None) -> dict[str, Any]:
            raw = get_argument_values(gfield, node, variables)
            return convert_arguments(raw, sfield.arguments, converter.scalar_registry, config)

        static = None if uses_variables else arguments(None)  # no variables in the arguments: none are read
        # Each call gets its own copy of the arguments computed once: a resolver that changed a list or an input
        # object it was given would otherwise change every later request's. Immutable values need no copy.
        fresh = dict if static is None or all(map(_immutable, static.values())) else copy.deepcopy
        has_self = "self" in params

        def get(s: Any, i: FastInfo, v: VariableValues) -> Any:
            kwargs = fresh(static) if static is not None else arguments(v)
            if wants_info:
                kwargs[info_name] = i
            return func(s, **kwargs) if has_self else func(**kwargs)

        return get


def _constant(value: str) -> Getter:
    """A getter that returns ``value`` (``__typename``)."""
    return lambda s, i, v: value


def _identity(v: Any) -> Any:
    return v


def _immutable(value: Any) -> bool:
    if isinstance(value, (str, bytes, int, float, bool, Enum, GlobalID)) or value is None:
        return True
    return isinstance(value, (tuple, frozenset)) and all(map(_immutable, value))


def _unwrap(t: GraphQLOutputType) -> tuple[list[str], GraphQLOutputType]:
    wraps: list[str] = []
    while True:
        if isinstance(t, GraphQLNonNull):
            wraps.append("nonnull")
            t = t.of_type
        elif isinstance(t, GraphQLList):
            wraps.append("list")
            t = t.of_type
        else:
            return wraps, t


class _Finder(Visitor):
    def __init__(self, kind: str):
        super().__init__()
        self.found = False
        self.kind = kind

    def enter(self, node: AstNode, *_: Any) -> None:
        if node.kind == self.kind:
            self.found = True


def _has_directives(document: DocumentNode) -> bool:
    v = _Finder("directive")
    visit(document, v)
    return v.found


def _uses_variables(node: FieldNode) -> bool:
    v = _Finder("variable")
    for arg in node.arguments or ():
        visit(arg, v)
    return v.found


__all__ = ["MAX_TOKENS", "Broken", "Compiler", "Fallback", "NotCompilable", "Plan"]
