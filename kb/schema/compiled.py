"""Compiled execution of repeated read-only queries: the API's hot path.

The graph a query reads is immutable, and clients send the same few documents with different variables
(e.g. "top-10 inputs of $key"). graphql-core's executor is generic: per field it builds resolve infos,
checks awaitables and completes values through several layers, about 15 µs a field here. For a document
seen before, this module walks a plan compiled once per document instead: attribute reads and direct calls
of the same resolvers, coerced arguments computed once when they use no variables.

It reads no strawberry internals (an import-linter contract forbids them): graphql-core's schema, taken from
strawberry's in one function (graphql_schema), validates the document and gives each field's type, arguments
and serializer; the class of each type is kb.schema's class of that name (python_types); a field's resolver is
the function kb.schema.fields.field recorded for it (RESOLVERS), called with its arguments converted from
graphql-core's coerced values by its own type hints (resolver_call); a field without one is an attribute read;
Relay's ``id`` is strawberry.relay's GlobalID of the type's resolve_id. A field it cannot place (a resolver not
registered: Unregistered), or an argument type it does not convert, makes the document NotCompilable.

Only what the plan can do exactly is compiled: queries (no mutations), object types (no interfaces or
unions), no directives, no async resolvers, and no field extensions or permissions (kb.schema.fields.field adds
none; tests/test_compiled_registry.py checks that no field a query reaches has any). Everything else, and any
exception while running a plan, falls back to strawberry's normal execution of the same request, which
produces the response, errors and all. The one error a plan answers itself is the usual one: an unknown key
(kb.graph.keys.KeyProblem: BAD_KEY, NOT_FOUND) raised by a root field's resolver, located and coded by the same
functions as strawberry's (graphql-core's ``located_error``, ``kb.schema.errors.with_code``), with the same
null propagation, so an unknown key does not run the resolvers twice; tests check both paths agree on data and
errors. A plan that fails on something else raises Broken (a Fallback): the endpoint counts and logs those.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Union, cast

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLFormattedError,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
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

from kb.db.io_guard import NeedsIO
from kb.errors import Problem
from kb.graph.keys import KeyProblem
from kb.schema.context import Context, Info
from kb.schema.deadline import DEADLINE
from kb.schema.errors import RequestTimeout, with_code
from kb.schema.fields import graphql_name, registered
from kb.schema.limits import MAX_TOKENS

if TYPE_CHECKING:
    from kb.schema import Schema


class NotCompilable(Exception):
    pass


class Unregistered(NotCompilable):
    """A field whose resolver kb.schema.fields did not record (a bare ``@strawberry.field``), or that the compiler
    cannot find on its class: strawberry answers the query. tests/test_compiled_registry.py checks that no field of
    the schema is one."""


class Fallback(Exception):
    pass


class Broken(Fallback):
    """The plan failed on an exception it did not expect (a resolver's bug, or one the plan calls otherwise than
    strawberry would): strawberry answers the request."""


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


def graphql_schema(schema: Schema) -> GraphQLSchema:
    """The schema as graphql-core's types, which strawberry built from kb.schema's classes: the one thing of
    strawberry's that the compiler reads (to validate documents, and for the fields' types, arguments and
    serializers). What a field runs comes from kb.schema itself: the classes and their registered resolvers."""
    return schema._schema


def python_types(gql: GraphQLSchema) -> dict[str, type]:
    """GraphQL object type name -> the class of kb.schema that defines it. strawberry names a type after its class
    (no type of ours passes ``name=``; tests/test_compiled_registry.py checks that the two agree for every type).
    A name that two of kb.schema's classes share maps to nothing: the compiler leaves queries over it to strawberry."""
    found: dict[str, list[type]] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "kb.schema" or module_name.startswith("kb.schema.")):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module_name and dataclasses.is_dataclass(value):
                found.setdefault(value.__name__, []).append(value)
    return {
        name: classes[0]
        for name, classes in found.items()
        if len(classes) == 1 and isinstance(gql.type_map.get(name), GraphQLObjectType)
    }


def unregistered_fields(cls: type) -> dict[str, tuple[str, object]]:
    """GraphQL name -> (Python name, class attribute) of the fields of ``cls`` (its dataclass fields, with its
    bases'), as strawberry names them by default: a field without a resolver has a plain class attribute (its default
    or none), one with a resolver has its function there, registered in kb.schema.fields.RESOLVERS or not."""
    out: dict[str, tuple[str, object]] = {}
    for f in dataclasses.fields(cls):
        out[graphql_name(f.name)] = (f.name, inspect.getattr_static(cls, f.name, None))
    return out


def _is_function(attribute: object) -> bool:
    return callable(attribute) or isinstance(attribute, (classmethod, staticmethod, property))


class Compiler:
    def __init__(self, schema: Schema, types: dict[str, type] | None = None):
        """``types``: the class of each GraphQL type name, when the schema's classes are not kb.schema's (a test's)."""
        self.gql = graphql_schema(schema)
        self.types = python_types(self.gql) if types is None else types
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
        cls = self.types.get(gtype.name)
        if cls is None:
            raise NotCompilable(f"no class of kb.schema is the type {gtype.name}")
        plan = ObjectPlan()
        for node, key in zip(nodes, keys, strict=True):
            name = node.name.value
            if name == "__typename":
                plan.fields.append(FieldPlan(key, _constant(gtype.name), ["nonnull"], _identity))
                continue
            gfield = gtype.fields[name]
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
            plan.fields.append(FieldPlan(key, self.getter(cls, gtype, gfield, node), wraps, leaf, sub, node))
        return plan

    def getter(self, cls: type, gtype: GraphQLObjectType, gfield: GraphQLField, node: FieldNode) -> Getter:
        """How the field ``node`` of ``cls`` (the class of ``gtype``) gets its value: Relay's global ID, a
        registered resolver called with its arguments converted, or an attribute read."""
        name = node.name.value
        if name == "id" and issubclass(cls, Node):  # relay's global ID, as strawberry.relay makes it
            type_name = gtype.name
            node_type = cls
            # FastInfo stands in for strawberry's Info, as for every resolver here (they read only .context)
            return lambda s, i, v: str(
                GlobalID(type_name=type_name, node_id=str(node_type.resolve_id(s, info=cast("Info", i))))
            )
        func = registered(cls, name)
        if func is None:
            attr, attribute = unregistered_fields(cls).get(name, ("", None))
            if not attr:
                raise Unregistered(f"{gtype.name}.{name}: no registered resolver and no attribute")
            if inspect.iscoroutinefunction(attribute):
                raise NotCompilable(f"{attr} is async")  # as a registered async resolver is: no need to register it
            if _is_function(attribute):
                raise Unregistered(f"{gtype.name}.{name}: its resolver is not registered (kb.schema.fields.field)")
            return lambda s, i, v: getattr(s, attr)
        if inspect.getattr_static(cls, func.__name__, None) is not func:
            raise Unregistered(f"{gtype.name}.{name}: overridden in {cls.__name__} by no registered resolver")
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise NotCompilable(f"{func.__name__} is async")
        call = resolver_call(func, gfield)
        uses_variables = _uses_variables(node)

        def arguments(variables: VariableValues | None) -> dict[str, Any]:
            return convert_arguments(get_argument_values(gfield, node, variables), call.arguments)

        static = None if uses_variables else arguments(None)  # no variables in the arguments: none are read
        # Each call gets its own copy of the arguments computed once: a resolver that changed a list or an input
        # object it was given would otherwise change every later request's. Immutable values need no copy.
        fresh = dict if static is None or all(map(_immutable, static.values())) else copy.deepcopy
        has_self, info_name = call.has_self, call.info

        def get(s: Any, i: FastInfo, v: VariableValues) -> Any:
            kwargs = fresh(static) if static is not None else arguments(v)
            if info_name is not None:
                kwargs[info_name] = i
            return func(s, **kwargs) if has_self else func(**kwargs)

        return get


# -- a resolver's arguments, from its type hints --------------------------------------------------------------

Convert = Callable[[Any], Any]
_SCALARS: dict[object, str] = {str: "String", int: "Int", float: "Float", bool: "Boolean"}


@dataclass(frozen=True)
class ResolverCall:
    """How to call a resolver: with the source as ``self`` or not, the name of its info parameter (None: none),
    and per GraphQL argument, its parameter's name and how graphql-core's coerced value becomes its Python value."""

    has_self: bool
    info: str | None
    arguments: dict[str, tuple[str, Convert]]


def resolver_call(func: Callable[..., Any], gfield: GraphQLField) -> ResolverCall:
    """The call of ``func`` for ``gfield``, read from its signature and type hints as strawberry reads them: ``self``
    is the source, a parameter typed kb.schema.context.Info the info, every other one a GraphQL argument named by
    ``strawberry.argument(name=...)`` or its camelCase. Parameters that must match the GraphQL field's arguments
    exactly, and each argument's type be one the converter knows (``_converter``); anything else is NotCompilable."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # a hint only a type checker can resolve: strawberry knows what it means
        raise NotCompilable(f"{func.__name__}: type hints") from exc
    parameters = list(inspect.signature(func).parameters.values())
    has_self = bool(parameters) and parameters[0].name == "self"
    info: str | None = None
    arguments: dict[str, tuple[str, Convert]] = {}
    for p in parameters[1:] if has_self else parameters:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.name not in hints:
            raise NotCompilable(f"{func.__name__}: parameter {p.name}")
        hint = hints[p.name]
        if hint == Info:
            info = p.name
            continue
        name, hint = _argument_name(p.name, hint)
        argument = gfield.args.get(name)
        if argument is None or name in arguments:
            raise NotCompilable(f"{func.__name__}: argument {name}")
        arguments[name] = (p.name, _converter(hint, argument.type))
    if set(arguments) != set(gfield.args):
        raise NotCompilable(f"{func.__name__}: arguments")
    return ResolverCall(has_self, info, arguments)


def _argument_name(python_name: str, hint: Any) -> tuple[str, Any]:
    """(GraphQL name, the hint without Annotated): ``Annotated[int, strawberry.argument(name="from")]`` -> "from"."""
    name = graphql_name(python_name)
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            given = getattr(meta, "name", None)
            if isinstance(given, str):
                name = given
        hint = hint.__origin__
    return name, hint


def _converter(hint: Any, gtype: GraphQLInputType) -> Convert:
    """graphql-core's coerced value of an argument typed ``gtype`` -> the Python value of type ``hint`` that
    strawberry gives the resolver: scalars (String, Int, Float, Boolean) as they are, enums as the Python enum's
    members, lists of those item by item, null as None. The hint and the GraphQL type must agree (strawberry made one
    from the other); any other type (input objects, global IDs, custom scalars) is NotCompilable."""
    if isinstance(gtype, GraphQLNonNull):
        gtype = gtype.of_type
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise NotCompilable(f"argument type {hint!r}")
        return _converter(rest[0], gtype)
    if origin is list and len(args) == 1 and isinstance(gtype, GraphQLList):
        item = _converter(args[0], gtype.of_type)
        return lambda v: None if v is None else [item(x) for x in v]
    if isinstance(hint, type) and issubclass(hint, Enum) and isinstance(gtype, GraphQLEnumType):
        members = {m.name: m.value for m in hint}
        if {n: v.value for n, v in gtype.values.items()} != members:
            raise NotCompilable(f"enum {gtype.name} is not {hint.__name__}")
        enum = hint
        return lambda v: v if v is None or isinstance(v, enum) else enum(v)
    if _SCALARS.get(hint) is not None and isinstance(gtype, GraphQLScalarType) and gtype.name == _SCALARS[hint]:
        return _identity
    raise NotCompilable(f"argument type {hint!r} as {gtype}")


def convert_arguments(raw: dict[str, Any], arguments: dict[str, tuple[str, Convert]]) -> dict[str, Any]:
    """The resolver's keyword arguments from graphql-core's coerced ones (``get_argument_values``): those given or
    defaulted in the schema; an argument left out and without a default is left to the function's own default."""
    return {python: convert(raw[name]) for name, (python, convert) in arguments.items() if name in raw}


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


__all__ = ["MAX_TOKENS", "Broken", "Compiler", "Fallback", "NotCompilable", "Plan", "Unregistered"]
