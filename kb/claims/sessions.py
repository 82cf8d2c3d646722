"""Passwords (argon2id) and sign-in sessions stored server-side, so that they can be revoked and expire.

A session's cookie holds 32 random bytes; the table keeps only their sha256 (a database leak gives no session)
and a per-session CSRF token that every form post and every cookie-authenticated GraphQL request must repeat.
Failed sign-ins are rows, counted per (account name, client address) and per client address, so the limits hold
across server processes. Past the allowed failures an address waits before each further try, longer with each
failure (``Limits``); a limited sign-in is refused before the password is even checked. Failures from one address
never stop the same account signing in from another: a stranger cannot lock anyone out.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from kb.claims.accounts import Account, user_id
from kb.claims.errors import BadInput, RateLimited, Unauthenticated
from kb.db.annotation_tables import signin_failure_table, web_session_table
from kb.db.claim_tables import api_token_table, user_table
from kb.db.tables import utcnow

COOKIE = "kb_session"  # the session cookie's name
CSRF_HEADER = "x-csrf-token"  # what a cookie-authenticated GraphQL request repeats the session's CSRF token in
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_hasher = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile
_DUMMY = _hasher.hash("not a password: equalises the time of unknown names")


def _utc(v: datetime) -> datetime:
    return v if v.tzinfo else v.replace(tzinfo=UTC)


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def set_password(conn: sa.Connection, name: str, password: str) -> None:
    """Set NAME's password and end every session they have (a changed password signs out everywhere)."""
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadInput(f"a password has at most {MAX_PASSWORD} characters")
    uid = user_id(conn, name)
    u = user_table
    conn.execute(sa.update(u).where(u.c.id == uid).values(password_hash=_hasher.hash(password)))
    revoke_all(conn, uid)


def check_password(conn: sa.Connection, name: str, password: str) -> Account:
    """The account if NAME exists, is enabled, has a password and it matches; else Unauthenticated."""
    u = user_table
    row = conn.execute(
        sa.select(u.c.id, u.c.name, u.c.role, u.c.password_hash, u.c.disabled_at).where(u.c.name == name)
    ).first()
    stored = row.password_hash if row is not None and row.password_hash else _DUMMY
    try:
        ok: bool = _hasher.verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or not row.password_hash or row.disabled_at is not None:
        raise Unauthenticated("wrong name or password")
    if _hasher.check_needs_rehash(row.password_hash):
        conn.execute(sa.update(u).where(u.c.id == row.id).values(password_hash=_hasher.hash(password)))
    return Account(row.id, row.name, row.role)


@dataclass(frozen=True)
class Limits:
    """Failures allowed before back-off: per (account name, address), and per address over every name. Past
    them, each further try waits ``first_wait_s`` after the latest failure, twice that after the next failure,
    and so on up to ``max_wait_s``. A failure counts for ``window_s`` (and is deleted by ``purge`` after that)."""

    per_account: int
    per_address: int
    window_s: float
    first_wait_s: float = 1.0
    max_wait_s: float = 900.0

    def wait(self, failures: int, allowed: int) -> float:
        """Seconds to wait after the latest of FAILURES failures when ALLOWED are allowed."""
        if failures < allowed:
            return 0.0
        return min(self.max_wait_s, self.first_wait_s * 2.0 ** min(failures - allowed, 60))


def check_limit(conn: sa.Connection, name: str, address: str, limits: Limits, now: datetime | None = None) -> None:
    """RateLimited if this ADDRESS has failed for NAME (or for any names) too often and must wait still.

    Failures for a name from other addresses do not count: a stranger cannot lock an account, only themselves.
    """
    f = signin_failure_table
    now = now or utcnow()
    since = now - timedelta(seconds=limits.window_s)
    pair = conn.execute(
        sa.select(sa.func.count(), sa.func.max(f.c.at)).where(
            f.c.name == name[:64], f.c.address == address[:64], f.c.at > since
        )
    ).one()
    by_address = conn.execute(
        sa.select(sa.func.count(), sa.func.max(f.c.at)).where(f.c.address == address[:64], f.c.at > since)
    ).one()
    waits = [
        (limits.wait(pair[0], limits.per_account), pair[1], "for this name from your address"),
        (limits.wait(by_address[0], limits.per_address), by_address[1], "from your address"),
    ]
    for wait, last, what in waits:
        left = wait - (now - _utc(last)).total_seconds() if wait and last is not None else 0.0
        if left > 0:
            seconds = math.ceil(left)
            raise RateLimited(f"too many failed sign-ins {what}: try again in {seconds} s", retryAfter=seconds)


def record_failure(conn: sa.Connection, name: str, address: str, now: datetime | None = None) -> None:
    conn.execute(sa.insert(signin_failure_table).values(name=name[:64], address=address[:64], at=now or utcnow()))


def clear_failures(conn: sa.Connection, name: str, address: str) -> None:
    """A sign-in succeeded: this address's failures for this name are forgiven."""
    f = signin_failure_table
    conn.execute(sa.delete(f).where(f.c.name == name[:64], f.c.address == address[:64]))


def sign_in(
    conn: sa.Connection, name: str, password: str, address: str, limits: Limits, ttl_s: float, user_agent: str = ""
) -> tuple[str, str]:
    """(cookie secret, CSRF token) of a new session. Call in its own transaction: a failure is recorded
    (and committed by the caller) before Unauthenticated propagates, see ``kb.web.auth``."""
    check_limit(conn, name, address, limits)
    account = check_password(conn, name, password)
    clear_failures(conn, name, address)
    return create_session(conn, account.id, address, ttl_s, user_agent)


SESSION_KEPT = timedelta(days=1)  # an ended or expired session's row stays this long: "sign in again" says why


def purge(conn: sa.Connection, window_s: float, now: datetime | None = None) -> tuple[int, int]:
    """Delete failed sign-ins older than the window and sessions that ended or expired over a day ago:
    (failures, sessions) deleted."""
    now = now or utcnow()
    f, s = signin_failure_table, web_session_table
    failures = conn.execute(sa.delete(f).where(f.c.at <= now - timedelta(seconds=window_s))).rowcount
    gone = now - SESSION_KEPT
    ended = conn.execute(sa.delete(s).where(sa.or_(s.c.expires_at <= gone, s.c.revoked_at <= gone))).rowcount
    return failures, ended


def create_session(conn: sa.Connection, uid: int, address: str, ttl_s: float, user_agent: str = "") -> tuple[str, str]:
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    conn.execute(
        sa.insert(web_session_table).values(
            user_id=uid,
            token_hash=_sha(secret),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            address=address[:64],
            user_agent=user_agent[:300],
        )
    )
    return secret, csrf


@dataclass(frozen=True)
class SessionInfo:
    id: int
    account: Account
    csrf_token: str
    expires_at: datetime


def session(conn: sa.Connection, secret: str) -> SessionInfo:
    """The live session behind a cookie: Unauthenticated if unknown, expired, revoked or the account disabled."""
    if not secret or len(secret) > 200:
        raise Unauthenticated("not signed in")
    s, u = web_session_table, user_table
    row = conn.execute(
        sa.select(
            s.c.id,
            s.c.csrf_token,
            s.c.expires_at,
            s.c.revoked_at,
            u.c.id.label("uid"),
            u.c.name,
            u.c.role,
            u.c.disabled_at,
        )
        .join(u, u.c.id == s.c.user_id)
        .where(s.c.token_hash == _sha(secret))
    ).first()
    if row is None:
        raise Unauthenticated("not signed in")
    if row.revoked_at is not None:
        raise Unauthenticated("this session was ended: sign in again")
    if _utc(row.expires_at) <= utcnow():
        raise Unauthenticated("this session has expired: sign in again")
    if row.disabled_at is not None:
        raise Unauthenticated("this account is disabled")
    return SessionInfo(row.id, Account(row.uid, row.name, row.role), row.csrf_token, _utc(row.expires_at))


def revoke(conn: sa.Connection, session_id: int) -> None:
    s = web_session_table
    conn.execute(sa.update(s).where(s.c.id == session_id, s.c.revoked_at.is_(None)).values(revoked_at=utcnow()))


def revoke_secret(conn: sa.Connection, secret: str) -> None:
    """End the session behind a cookie value, if any (signing in again replaces the browser's old session)."""
    s = web_session_table
    conn.execute(
        sa.update(s).where(s.c.token_hash == _sha(secret), s.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


def revoke_all(conn: sa.Connection, uid: int) -> int:
    s = web_session_table
    return conn.execute(
        sa.update(s).where(s.c.user_id == uid, s.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    ).rowcount


def same_secret(a: str, b: str) -> bool:
    return bool(a) and bool(b) and secrets.compare_digest(a.encode(), b.encode())


def tokens_of(conn: sa.Connection, uid: int) -> list[dict[str, Any]]:

    t = api_token_table
    rows = conn.execute(
        sa.select(t.c.id, t.c.prefix, t.c.note, t.c.created_at, t.c.revoked_at)
        .where(t.c.user_id == uid)
        .order_by(t.c.id.desc())
    )
    return [dict(r._mapping) for r in rows]


def revoke_own_token(conn: sa.Connection, uid: int, token_id: int) -> None:
    """Revoke one of the caller's own tokens (someone else's is NotFound, not Forbidden: no probing)."""
    from kb.claims.errors import NotFound

    t = api_token_table
    done = conn.execute(
        sa.update(t).where(t.c.id == token_id, t.c.user_id == uid, t.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    ).rowcount
    if not done:
        raise NotFound("no such active token of yours")


def cookie_account(conn: sa.Connection, secret: str, csrf: str | None) -> Account:
    """The account of a cookie-authenticated API request; the request must carry the session's CSRF token."""
    info = session(conn, secret)
    if not same_secret(csrf or "", info.csrf_token):
        raise Unauthenticated(
            f"a request signed in by cookie must send the session's CSRF token in {CSRF_HEADER}, or use a bearer token"
        )
    return info.account
