"""Account administration, one function per use case, each its own unit of work (one transaction): the CLI
(``kb user``, ``kb token``) and the account page call these. The rules (roles, token format and hashing,
passwords, sessions) are kb.claims'; this module decides what one request does and what it commits together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kb.claims import accounts, sessions
from kb.claims.errors import NotFound
from kb.db.claim_tables import api_token_table, user_table


@dataclass(frozen=True)
class UserSummary:
    name: str
    role: str
    display_name: str


@dataclass(frozen=True)
class TokenSummary:
    prefix: str  # the token's first 12 characters: never the token
    user: str
    note: str
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def create_user(engine: sa.Engine, name: str, role: str, display_name: str = "") -> int:
    """A new account; BadInput for a taken name or an unknown role."""
    with engine.begin() as conn:
        return accounts.create_user(conn, name, role, display_name)


def set_password(engine: sa.Engine, name: str, password: str) -> None:
    """NAME's password for signing in on the web; their open sign-in sessions end with the same commit."""
    with engine.begin() as conn:
        sessions.set_password(conn, name, password)


def sign_out_everywhere(engine: sa.Engine, name: str) -> int:
    """Ends every sign-in session of NAME (API tokens stay); how many ended."""
    with engine.begin() as conn:
        return sessions.revoke_all(conn, accounts.user_id(conn, name))


def users(engine: sa.Engine) -> list[UserSummary]:
    """Every account, by name."""
    t = user_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.name, t.c.role, t.c.display_name).order_by(t.c.name))
        return [UserSummary(r.name, r.role, r.display_name) for r in rows]


def create_token(engine: sa.Engine, name: str, note: str = "") -> str:
    """A new API token for NAME, returned once (only its hash is kept); NotFound for an unknown name."""
    with engine.begin() as conn:
        return accounts.create_token(conn, name, note)


def revoke_token(engine: sa.Engine, prefix: str) -> None:
    """Revokes the active token that starts with ``prefix`` (its first 12 characters count); NotFound if none."""
    with engine.begin() as conn:
        accounts.revoke_token(conn, prefix)


def tokens(engine: sa.Engine, name: str | None = None) -> list[TokenSummary]:
    """Every token (prefix, user, note, when revoked), oldest first; only NAME's when given (NotFound if no such
    user)."""
    t, u = api_token_table, user_table
    q = sa.select(t.c.prefix, u.c.name, t.c.note, t.c.revoked_at).join(u, u.c.id == t.c.user_id).order_by(t.c.id)
    with engine.connect() as conn:
        if name is not None:
            if conn.execute(sa.select(u.c.id).where(u.c.name == name)).first() is None:
                raise NotFound(f"no user {name!r}")
            q = q.where(u.c.name == name)
        return [TokenSummary(r.prefix, r.name, r.note, r.revoked_at) for r in conn.execute(q)]
