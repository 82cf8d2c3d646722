"""Who is calling: the bearer token, resolved once per request; roles declared on every mutation.

Reads are public. A mutation declares the least role it needs with ``@mutation(role=...)``; the declaration is
a strawberry permission class, so the schema itself says who may call what (a test walks it).
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from strawberry.permission import BasePermission
from strawberry.types.field import StrawberryField

from kb.claims.accounts import ROLES, Account
from kb.schema import fields
from kb.schema.context import Info
from kb.schema.errors import CodedError


class Requires(BasePermission):
    role: ClassVar[str] = "admin"
    message = "not allowed"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        account: Account = info.context.account()
        if not account.at_least(self.role):
            raise CodedError(f"this needs the {self.role} role; {account.name} is {account.role}", "FORBIDDEN")
        info.context.rate_limit(account)
        return True


@cache
def requires(role: str) -> type[Requires]:
    assert role in ROLES, role
    return type(f"Requires{role.title()}", (Requires,), {"role": role})


def mutation(role: str, *, description: str | None = None, name: str | None = None) -> StrawberryField:
    """A mutation callable by ``role`` and above (ownership rules are the domain's)."""
    return fields.mutation(description=description, name=name, permission_classes=[requires(role)])
