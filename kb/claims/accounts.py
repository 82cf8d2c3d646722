"""Users, roles and API tokens.

A token looks like ``ckb_<32 base62 characters>_<6 character checksum>``: the prefix makes a leaked token easy
to spot (secret scanners, logs), and the checksum (CRC-32 of the secret part) refuses a mistyped or truncated
token without a database query. Only the token's sha256 is stored; the token is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from kb.claims.errors import BadInput, NotFound, Unauthenticated
from kb.claims.rows import UserRow
from kb.db.claim_tables import api_token_table, user_table
from kb.db.tables import utcnow

ROLES = ("viewer", "editor", "moderator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PREFIX = "ckb_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"^ckb_([0-9A-Za-z]{32})_([0-9A-Za-z]{6})$")


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: str
    token_id: int | None = None

    def at_least(self, role: str) -> bool:
        return RANK.get(self.role, -1) >= RANK[role]  # an unknown role (a bad import) may do nothing


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _checksum(secret: str) -> str:
    return _base62(zlib.crc32(secret.encode()), 6)


def new_token() -> str:
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return f"{PREFIX}{secret}_{_checksum(secret)}"


def well_formed(token: str) -> bool:
    """Prefix, length and checksum: no database needed."""
    m = _TOKEN.match(token or "")
    return m is not None and _checksum(m[1]) == m[2]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(conn: sa.Connection, name: str, role: str, display_name: str = "") -> int:
    if not NAME.match(name or ""):
        raise BadInput(f"user name {name!r} is not valid: lowercase letters, digits, '_', '.', '-' (at most 64)")
    if role not in RANK:
        raise BadInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    t = user_table
    if conn.execute(sa.select(t.c.id).where(t.c.name == name)).first():
        raise BadInput(f"user {name!r} already exists")
    uid: int = conn.execute(
        sa.insert(t)
        .values(name=name, role=role, display_name=display_name or name, created_at=utcnow())
        .returning(t.c.id)
    ).scalar_one()
    return uid


def user_id(conn: sa.Connection, name: str) -> int:
    t = user_table
    uid: int | None = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    if uid is None:
        raise NotFound(f"no user {name!r}")
    return uid


def people_by_id(conn: sa.Connection, user_ids: Collection[int]) -> dict[int, UserRow]:
    """Who these users are (id, name, display_name, role), by id, in one statement (absent ids left out)."""
    if not user_ids:
        return {}
    t = user_table
    rows = conn.execute(sa.select(t.c.id, t.c.name, t.c.display_name, t.c.role).where(t.c.id.in_(set(user_ids))))
    return {r.id: UserRow.of(r._mapping) for r in rows}


def ensure_user(conn: sa.Connection, name: str, role: str, display_name: str = "") -> int:
    t = user_table
    uid = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    return uid if uid is not None else create_user(conn, name, role, display_name)


def create_token(conn: sa.Connection, name: str, note: str = "") -> str:
    uid = user_id(conn, name)
    token = new_token()
    conn.execute(
        sa.insert(api_token_table).values(
            user_id=uid, token_hash=token_hash(token), prefix=token[:12], note=note, created_at=utcnow()
        )
    )
    return token


def revoke_token(conn: sa.Connection, prefix: str) -> int:
    t = api_token_table
    n = conn.execute(
        sa.update(t).where(t.c.prefix == prefix[:12], t.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    ).rowcount
    if not n:
        raise NotFound(f"no active token starting {prefix[:12]!r}")
    return n


def authenticate(conn: sa.Connection, token: str) -> Account:
    if not well_formed(token):
        raise Unauthenticated("malformed token: expected ckb_… with a valid checksum")
    t, u = api_token_table, user_table
    row = conn.execute(
        sa.select(t.c.id, t.c.revoked_at, u.c.id.label("uid"), u.c.name, u.c.role, u.c.disabled_at)
        .join(u, u.c.id == t.c.user_id)
        .where(t.c.token_hash == token_hash(token))
    ).first()
    if row is None:
        raise Unauthenticated("unknown token")
    if row.revoked_at is not None:
        raise Unauthenticated("this token was revoked")
    if row.disabled_at is not None:
        raise Unauthenticated("this account is disabled")
    return Account(row.uid, row.name, row.role, row.id)
