"""Signing in on the web and one's own account, one function per use case, each its own unit of work: the sign-in
and account pages (kb.web.auth) call these. The rules (limits, password hashing, session secrets) are
kb.claims.sessions'; this module decides what one request commits together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kb.claims import sessions
from kb.claims.errors import Unauthenticated


@dataclass(frozen=True)
class OwnToken:
    """One of the signed-in account's API tokens, as the account page lists it (never the token itself)."""

    id: int
    prefix: str
    note: str
    created_at: datetime
    revoked_at: datetime | None


def session_of(engine: sa.Engine, secret: str) -> sessions.SessionInfo | None:
    """The live session behind a cookie's secret, or None (unknown, expired, revoked)."""
    try:
        with engine.connect() as conn:
            return sessions.session(conn, secret)
    except Unauthenticated:
        return None


def sign_in(
    engine: sa.Engine,
    limits: sessions.Limits,
    ttl_s: float,
    name: str,
    password: str,
    address: str,
    user_agent: str = "",
    old_secret: str | None = None,
) -> str:
    """A new session's cookie secret; the session this browser had (``old_secret``) ends in the same commit.
    RateLimited past the limits; Unauthenticated for a wrong name or password, after the failure is committed
    in a transaction of its own (it counts against the limits although the sign-in failed)."""
    try:
        with engine.begin() as conn:
            secret, _ = sessions.sign_in(conn, name, password, address, limits, ttl_s, user_agent)
            if old_secret:
                sessions.revoke_secret(conn, old_secret)
            return secret
    except Unauthenticated:
        with engine.begin() as conn:
            sessions.record_failure(conn, name, address)
        raise


def purge(engine: sa.Engine, window_s: float) -> tuple[int, int]:
    """Failed sign-ins older than the window and long-ended sessions go: (failures, sessions) deleted."""
    with engine.begin() as conn:
        return sessions.purge(conn, window_s)


def sign_out(engine: sa.Engine, session_id: int) -> None:
    """Ends one sign-in session (this browser's)."""
    with engine.begin() as conn:
        sessions.revoke(conn, session_id)


def own_tokens(engine: sa.Engine, user_id: int) -> list[OwnToken]:
    """The account's API tokens, newest first, revoked ones included."""
    with engine.connect() as conn:
        return [OwnToken(**row) for row in sessions.tokens_of(conn, user_id)]


def revoke_own_token(engine: sa.Engine, user_id: int, token_id: int) -> None:
    """Revokes one of the account's own tokens; NotFound for someone else's or one already revoked (no probing)."""
    with engine.begin() as conn:
        sessions.revoke_own_token(conn, user_id, token_id)
