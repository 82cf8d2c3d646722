"""Reviews: one per user per claim (changeable, every change kept), and the counts on the claim."""

from __future__ import annotations

import sqlalchemy as sa

from kb.claims.accounts import Account
from kb.claims.errors import BadInput, Forbidden, NotFound
from kb.db.claim_tables import Claim, Review, ReviewRevision
from kb.db.tables import utcnow

VERDICTS = ("SUPPORT", "DISPUTE")
MAX_COMMENT = 20_000


def review_claim(conn: sa.Connection, actor: Account, claim_id: int, verdict: str, comment: str = "") -> int:
    """Record (or change) the actor's verdict; returns the review's revision number."""
    if not actor.at_least("editor"):
        raise Forbidden("reviewing needs the editor role")
    if verdict not in VERDICTS:
        raise BadInput(f"verdict must be one of {', '.join(VERDICTS)}")
    comment = comment or ""
    if len(comment) > MAX_COMMENT:
        raise BadInput(f"comment is longer than {MAX_COMMENT} characters")
    c, r = Claim.__table__, Review.__table__
    if conn.execute(sa.select(c.c.id).where(c.c.id == claim_id)).first() is None:
        raise NotFound(f"no claim:{claim_id}")
    at = utcnow()
    current = conn.execute(
        sa.select(r.c.revision).where(r.c.claim_id == claim_id, r.c.user_id == actor.id).with_for_update()
    ).scalar()
    if current is None:
        revision = 1
        conn.execute(
            sa.insert(r).values(
                claim_id=claim_id,
                user_id=actor.id,
                verdict=verdict,
                comment=comment,
                revision=1,
                created_at=at,
                updated_at=at,
            )
        )
    else:
        revision = current + 1
        conn.execute(
            sa.update(r)
            .where(r.c.claim_id == claim_id, r.c.user_id == actor.id)
            .values(verdict=verdict, comment=comment, revision=revision, updated_at=at)
        )
    conn.execute(
        sa.insert(ReviewRevision.__table__).values(
            claim_id=claim_id, user_id=actor.id, revision=revision, verdict=verdict, comment=comment, created_at=at
        )
    )
    recount(conn, claim_id)
    return revision


def recount(conn: sa.Connection, claim_id: int) -> None:
    r, c = Review.__table__, Claim.__table__
    counts = dict(
        conn.execute(
            sa.select(r.c.verdict, sa.func.count()).where(r.c.claim_id == claim_id).group_by(r.c.verdict)
        ).all()
    )
    conn.execute(
        sa.update(c)
        .where(c.c.id == claim_id)
        .values(support_count=counts.get("SUPPORT", 0), dispute_count=counts.get("DISPUTE", 0))
    )
