"""Reviews: one per user per claim (changeable, every change kept), and the counts on the claim.

A review is written under a lock on the claim's row (an UPDATE of the row, the first write of the transaction,
so PostgreSQL and SQLite both hold it until commit): reviews of one claim are serialised, the upsert of the
review never races its own insert, and the counts recomputed from the review rows cannot drift. Each review
records the claim revision it judged; a later content revision makes it stale.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import sqlalchemy as sa

from kb.claims import revision_rows
from kb.claims.accounts import Account
from kb.claims.errors import BadInput, Forbidden, NotFound
from kb.claims.rows import ClaimRevisionRow, ReviewRevisionRow, ReviewRow
from kb.db.claim_tables import claim_table, review_revision_table, review_table
from kb.db.tables import utcnow

VERDICTS = ("SUPPORT", "DISPUTE")
MAX_COMMENT = 20_000
CONTENT = ("label", "body", "kind", "confidence", "subjects", "circuit_id", "circuit_revision", "evidence")


def lock_claim(conn: sa.Connection, claim_id: int) -> int:
    """Take the claim's row lock for this transaction; returns its current revision (NotFound if none)."""
    c = claim_table
    revision: int | None = conn.execute(
        sa.update(c).where(c.c.id == claim_id).values(revision=c.c.revision).returning(c.c.revision)
    ).scalar()
    if revision is None:
        raise NotFound(f"no claim:{claim_id}")
    return revision


def content_revisions(revisions: Sequence[ClaimRevisionRow]) -> list[ClaimRevisionRow]:
    """The revisions that changed content (the first, and each that changed more than the status)."""
    out: list[ClaimRevisionRow] = []
    before = None
    for rev in revisions:
        if before is None or any(getattr(rev, k) != getattr(before, k) for k in CONTENT):
            out.append(rev)
        before = rev
    return out


def content_authors(revisions: Sequence[ClaimRevisionRow]) -> list[int]:
    """User ids of the content authors, in order of first contribution."""
    return list(dict.fromkeys(r.author_id for r in content_revisions(revisions)))


def last_content_revision(revisions: Sequence[ClaimRevisionRow]) -> int:
    revs = content_revisions(revisions)
    return revs[-1].revision if revs else 0


def reviews_of_claims(conn: sa.Connection, claim_ids: Collection[int]) -> dict[int, list[ReviewRow]]:
    """The current reviews of each claim, by reviewer id, in one statement."""
    r = review_table
    out: dict[int, list[ReviewRow]] = {i: [] for i in claim_ids}
    if claim_ids:
        for row in conn.execute(sa.select(r).where(r.c.claim_id.in_(list(out))).order_by(r.c.claim_id, r.c.user_id)):
            out[row.claim_id].append(ReviewRow.of(row._mapping))
    return out


def review(conn: sa.Connection, claim_id: int, user_id: int) -> ReviewRow:
    """One user's current review of a claim (NotFound if there is none)."""
    r = review_table
    row = conn.execute(sa.select(r).where(r.c.claim_id == claim_id, r.c.user_id == user_id)).first()
    if row is None:
        raise NotFound(f"no review of claim:{claim_id} by user {user_id}")
    return ReviewRow.of(row._mapping)


def review_histories(
    conn: sa.Connection, keys: Collection[tuple[int, int]]
) -> dict[tuple[int, int], list[ReviewRevisionRow]]:
    """Every revision of each review (claim id, user id), oldest first, in one statement."""
    h = review_revision_table
    out: dict[tuple[int, int], list[ReviewRevisionRow]] = {k: [] for k in keys}
    if keys:
        rows = conn.execute(
            sa.select(h)
            .where(sa.tuple_(h.c.claim_id, h.c.user_id).in_(list(out)))
            .order_by(h.c.claim_id, h.c.user_id, h.c.revision)
        )
        for row in rows:
            out[(row.claim_id, row.user_id)].append(ReviewRevisionRow.of(row._mapping))
    return out


def review_claim(conn: sa.Connection, actor: Account, claim_id: int, verdict: str, comment: str = "") -> int:
    """Record (or change) the actor's verdict on the current revision; returns the review's revision number."""
    if not actor.at_least("editor"):
        raise Forbidden("reviewing needs the editor role")
    if verdict not in VERDICTS:
        raise BadInput(f"verdict must be one of {', '.join(VERDICTS)}")
    comment = comment or ""
    if len(comment) > MAX_COMMENT:
        raise BadInput(f"comment is longer than {MAX_COMMENT} characters")
    judged = lock_claim(conn, claim_id)
    if actor.id in content_authors(revision_rows.claim_revisions(conn, [claim_id])[claim_id]):
        raise Forbidden(f"you wrote claim:{claim_id}: its authors cannot review it")
    r = review_table
    at = utcnow()
    current = conn.execute(sa.select(r.c.revision).where(r.c.claim_id == claim_id, r.c.user_id == actor.id)).scalar()
    values = {"verdict": verdict, "comment": comment, "claim_revision": judged, "updated_at": at}
    if current is None:
        revision = 1
        conn.execute(sa.insert(r).values(claim_id=claim_id, user_id=actor.id, revision=1, created_at=at, **values))
    else:
        revision = current + 1
        conn.execute(
            sa.update(r).where(r.c.claim_id == claim_id, r.c.user_id == actor.id).values(revision=revision, **values)
        )
    conn.execute(
        sa.insert(review_revision_table).values(
            claim_id=claim_id,
            user_id=actor.id,
            revision=revision,
            verdict=verdict,
            comment=comment,
            claim_revision=judged,
            created_at=at,
        )
    )
    recount(conn, claim_id)
    return revision


def recount(conn: sa.Connection, claim_id: int) -> None:
    """The counts from the review rows (under the claim's lock)."""
    r, c = review_table, claim_table
    counts: dict[str, int] = dict(
        conn.execute(
            sa.select(r.c.verdict, sa.func.count()).where(r.c.claim_id == claim_id).group_by(r.c.verdict)
        ).all()
    )
    conn.execute(
        sa.update(c)
        .where(c.c.id == claim_id)
        .values(support_count=counts.get("SUPPORT", 0), dispute_count=counts.get("DISPUTE", 0))
    )
