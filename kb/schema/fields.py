"""strawberry's field decorators, typed: ``@field(description=...)`` and ``@subscription(description=...)``.

strawberry types a bare ``@strawberry.field`` as a StrawberryField, but the same decorator called with arguments
(``@strawberry.field(description=...)``) as Any (strawberry-graphql/strawberry#1929), which mypy's strict mode
refuses as an untyped decorator. These pass their arguments through unchanged and say what strawberry returns:
a StrawberryField, which called on its resolver returns itself. They import nothing of kb.
"""

from __future__ import annotations

import strawberry
from strawberry.permission import BasePermission
from strawberry.types.field import StrawberryField


def field(*, description: str | None = None, name: str | None = None) -> StrawberryField:
    """``strawberry.field(description=..., name=...)``, to decorate a resolver."""
    made: StrawberryField = strawberry.field(description=description, name=name)
    return made


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
