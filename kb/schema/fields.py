"""strawberry's field decorators, typed, and the registry of the query resolvers they decorate.

strawberry types a bare ``@strawberry.field`` as a StrawberryField, but the same decorator called with arguments
(``@strawberry.field(description=...)``) as Any (strawberry-graphql/strawberry#1929), which mypy's strict mode
refuses as an untyped decorator. These pass their arguments through unchanged and say what strawberry returns:
a StrawberryField, which called on its resolver returns itself. They import nothing of kb.

``@field(...)`` also records the function it decorates in RESOLVERS, under its class and its GraphQL name, so that
the compiled executor (kb.schema.compiled) calls the same functions strawberry does without reading strawberry's
field objects. A resolver decorated otherwise (a bare ``@strawberry.field``) is not in the registry: the compiler
leaves the queries that ask for it to strawberry. Mutations and subscriptions are never compiled, so
``mutation`` and ``subscription`` record nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from strawberry.permission import BasePermission
from strawberry.types.field import StrawberryField
from strawberry.utils.str_converters import to_camel_case

# (the owning class's "module.qualname", the GraphQL field name) -> the resolver function, as written in its class
RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {}


def graphql_name(python_name: str) -> str:
    """The GraphQL name strawberry gives a Python name by default (its auto_camel_case): per_node -> perNode."""
    return to_camel_case(python_name)


def owner_key(cls: type) -> str:
    """How RESOLVERS names a class: ``module.qualname``, unique in the process (two types may share a name)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def registered(cls: type, name: str) -> Callable[..., Any] | None:
    """The resolver of ``cls``'s GraphQL field ``name``: the one recorded for the nearest class of its MRO that has
    one (a subclass's overrides its base's, as in strawberry), or None."""
    for klass in cls.__mro__:
        func = RESOLVERS.get((owner_key(klass), name))
        if func is not None:
            return func
    return None


def _register(func: Callable[..., Any], name: str | None) -> None:
    """Records a resolver written in a class body (its qualname is Class.method); anything else is left out."""
    qualname = getattr(func, "__qualname__", "")
    owner, _, python_name = qualname.rpartition(".")
    if owner and "<locals>" not in owner and python_name:
        RESOLVERS[(f"{func.__module__}.{owner}", name or graphql_name(python_name))] = func


def field(
    *, description: str | None = None, name: str | None = None
) -> Callable[[Callable[..., Any]], StrawberryField]:
    """``strawberry.field(description=..., name=...)``, to decorate a resolver (recorded in RESOLVERS)."""

    def decorate(resolver: Callable[..., Any]) -> StrawberryField:
        _register(resolver, name)
        made: StrawberryField = strawberry.field(description=description, name=name)
        return made(resolver)

    return decorate


def mutation(
    *,
    description: str | None = None,
    name: str | None = None,
    permission_classes: list[type[BasePermission]] | None = None,
) -> StrawberryField:
    """``strawberry.mutation(...)``, to decorate a resolver (kb.schema.auth.mutation adds the role's permission)."""
    made: StrawberryField = strawberry.mutation(
        description=description, name=name, permission_classes=permission_classes
    )
    return made


def subscription(*, description: str | None = None, name: str | None = None) -> StrawberryField:
    """``strawberry.subscription(description=..., name=...)``, to decorate an async generator."""
    made: StrawberryField = strawberry.subscription(description=description, name=name)
    return made
