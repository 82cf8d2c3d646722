"""The compiled executor (kb.schema.compiled) finds what each field runs without strawberry: the class of a GraphQL
type by its name, a resolver in kb.schema.fields' registry, an attribute otherwise. Here its view is checked against
strawberry's own (its type definitions, read only in this test) for every field a query can reach, and the query
documents the client, the pages and the benchmarks send are checked to compile: a field that silently fell back to
strawberry (a resolver decorated without kb.schema.fields.field) would only show as a slower API.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from functools import cache
from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    parse,
)
from strawberry.relay import Node

import kb.web
from kb.client import _NEIGHBORS, _SUBGRAPH
from kb.schema import build_schema
from kb.schema.compiled import (
    Compiler,
    NotCompilable,
    Unregistered,
    python_types,
    resolver_call,
    unregistered_fields,
)
from kb.schema.fields import RESOLVERS, graphql_name, registered

pytestmark = pytest.mark.database_free

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = {"String", "Int", "Float", "Boolean"}


@cache
def _schema():
    return build_schema()


def _query_types() -> list[GraphQLObjectType]:
    """The object types a query can reach from the query root."""
    gql = Compiler(_schema()).gql
    seen: dict[str, GraphQLObjectType] = {}
    todo = [gql.query_type]
    while todo:
        t = todo.pop()
        if t.name in seen:
            continue
        seen[t.name] = t
        for f in t.fields.values():
            named = get_named_type(f.type)
            if isinstance(named, GraphQLObjectType):
                todo.append(named)
    return list(seen.values())


def test_each_graphql_type_is_the_class_of_that_name_strawberry_built_it_from():
    schema = _schema()
    classes = python_types(Compiler(schema).gql)
    for gtype in _query_types():
        definition = schema.get_type_by_name(gtype.name)
        assert classes.get(gtype.name) is definition.origin, gtype.name


def test_every_field_a_query_reaches_resolves_as_strawberry_resolves_it():
    """Per field: strawberry's resolver is the registered one, or strawberry reads the attribute the compiler reads,
    or it is Relay's id; an async resolver may go unregistered (the compiler leaves it to strawberry). No field has
    extensions or permissions: a plan would skip them. Fields of interface types (Relay's node, nodes) are left out:
    the compiler refuses them by their type."""
    schema = _schema()
    convert = schema.config.name_converter
    classes = python_types(Compiler(schema).gql)
    counts = {"registered": 0, "attribute": 0, "async": 0}
    for gtype in _query_types():
        cls = classes[gtype.name]
        for sfield in schema.get_type_by_name(gtype.name).fields:
            name = convert.get_graphql_name(sfield)
            where = f"{gtype.name}.{name}"
            if name not in gtype.fields:  # strawberry.Private: no GraphQL field
                continue
            if isinstance(get_named_type(gtype.fields[name].type), GraphQLInterfaceType):
                continue
            assert not (sfield.extensions or sfield.permission_classes or sfield.directives), where
            if name == "id" and issubclass(cls, Node):
                continue
            resolver = sfield.base_resolver
            ours = registered(cls, name)
            if resolver is None:
                assert ours is None, where
                assert unregistered_fields(cls)[name][0] == sfield.python_name, where
                counts["attribute"] += 1
            elif ours is not None:
                assert ours is resolver.wrapped_func, where
                counts["registered"] += 1
            else:
                assert resolver.is_async, f"{where}: its resolver is not registered (use kb.schema.fields.field)"
                counts["async"] += 1
    assert min(counts.values()) > 0, counts


def test_registered_resolvers_take_their_arguments_as_strawberry_passes_them():
    """The compiler's reading of each registered resolver's parameters (self, info, the GraphQL arguments by name)
    agrees with strawberry's; it refuses only arguments whose types it does not convert (input objects, IDs...)."""
    schema = _schema()
    convert = schema.config.name_converter
    gql = Compiler(schema).gql
    classes = python_types(gql)
    checked = refused = 0
    for gtype in _query_types():
        for sfield in schema.get_type_by_name(gtype.name).fields:
            name = convert.get_graphql_name(sfield)
            func = registered(classes[gtype.name], name)
            if name not in gtype.fields or func is None or inspect.iscoroutinefunction(func):
                continue
            gfield = gtype.fields[name]
            try:
                call = resolver_call(func, gfield)
            except NotCompilable:
                kinds = [get_named_type(a.type) for a in gfield.args.values()]
                assert any(not isinstance(k, GraphQLEnumType) and k.name not in BUILTIN for k in kinds), (
                    f"{gtype.name}.{name} refused with arguments of types it converts: {kinds}"
                )
                refused += 1
                continue
            expected = {convert.get_graphql_name(a): a.python_name for a in sfield.arguments}
            assert {g: python for g, (python, _) in call.arguments.items()} == expected, f"{gtype.name}.{name}"
            info = sfield.base_resolver.info_parameter
            assert call.info == (info.name if info is not None else None), f"{gtype.name}.{name}"
            checked += 1
    assert checked > 20 and refused < checked


def test_the_registry_keys_resolvers_by_class_and_graphql_name():
    assert graphql_name("per_node") == "perNode" and graphql_name("short_hash") == "shortHash"
    assert graphql_name("key") == "key"
    keys = {name for (_, name) in RESOLVERS}
    assert {"inputs", "shortHash", "renderJobs", "revisionAt"} <= keys  # renderJobs, revisionAt: given by name=


# -- what the client, the pages and the benchmarks send --------------------------------------------------------


@cache
def _bench_module(name: str):
    """A benchmark script as a module (bench/ is no package; its scripts run only under __main__)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _queries(modules) -> list[tuple[str, str]]:
    """(module, document) for every module-level string (or dict or tuple of them) that is a query document."""
    out = []
    for module in modules:
        for name, value in vars(module).items():
            for text in _strings(value):
                if "{" not in text:
                    continue
                try:
                    doc = parse(text)
                except Exception:
                    continue
                ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
                if len(ops) == 1 and ops[0].operation == OperationType.QUERY:
                    out.append((f"{module.__name__}.{name}", text))
    return out


def _sent_documents() -> list[tuple[str, str]]:
    web = [importlib.import_module(m.name) for m in pkgutil.iter_modules(kb.web.__path__, "kb.web.")]
    modules = [importlib.import_module("kb.client"), *web, _bench_module("neighbors")]
    return _queries(modules)


def test_the_documents_sent_compile_or_are_refused_for_what_a_plan_cannot_do():
    """No document of the client's, the pages' or the benchmarks' is refused for an unregistered resolver."""
    compiler = Compiler(_schema())
    documents = _sent_documents()
    assert len(documents) >= 20
    compiled = 0
    for where, text in documents:
        try:
            compiler.compile(parse(text), None)
            compiled += 1
        except Unregistered as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        except NotCompilable:
            pass
    assert compiled >= 10


@pytest.mark.parametrize(
    "document",
    [
        _bench_module("neighbors").OUR_QUERY,
        _NEIGHBORS["inputs"],
        _NEIGHBORS["outputs"],
        _SUBGRAPH,
        "query($k: String!) { layer(key: $k) { key name units model { key sha256 } } }",  # kb.web.pages' layer
        "query($k: String!) { neuron(key: $k) { id key index url pinnedKey model { key shortHash } "
        "layer { key units name } inputs(first: 3) { totalCount edges { weight magnitude method node { key } } } } }",
    ],
)
def test_the_hot_documents_compile(document):
    """The benchmark's query, the client's neighbour and subgraph queries and the fields they read run as plans."""
    Compiler(_schema()).compile(parse(document), None)
