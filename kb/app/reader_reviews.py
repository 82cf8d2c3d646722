"""A signed-in reader's standing towards the claims a page lists: whether they wrote each one (its content authors
cannot review it: the page offers no Support/Dispute) and their own current review of it, if any (shown back,
marked stale when the claim's content changed after it). Read on one connection, two statements for any number of
claims."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kb.claims import claims as claim_domain
from kb.claims.reviews import content_authors, last_content_revision, reviews_of_claims


@dataclass(frozen=True, slots=True)
class OwnReview:
    verdict: str  # SUPPORT or DISPUTE
    comment: str
    stale: bool  # made of a revision older than the claim's last change of content


@dataclass(frozen=True, slots=True)
class Standing:
    authored: bool  # among the claim's content authors
    review: OwnReview | None


def standing(engine: sa.Engine, user_id: int, claim_keys: list[str]) -> dict[str, Standing]:
    """The reader's standing towards each claim (claim:N), by key."""
    ids = [claim_domain.parse_key(k) for k in claim_keys]
    if not ids:
        return {}
    with engine.connect() as conn:
        revisions = claim_domain.revisions(conn, ids)
        reviews = reviews_of_claims(conn, ids)
    out: dict[str, Standing] = {}
    for key, claim_id in zip(claim_keys, ids, strict=True):
        revs = revisions[claim_id]
        mine = next((r for r in reviews[claim_id] if r.user_id == user_id), None)
        review = None
        if mine is not None:
            stale = (mine.claim_revision or 0) < last_content_revision(revs)
            review = OwnReview(verdict=mine.verdict, comment=mine.comment, stale=stale)
        out[key] = Standing(authored=user_id in content_authors(revs), review=review)
    return out
