"""A claim's revision rows with their authors' names (one statement for many claims)."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from kb.claims.rows import ClaimRevisionRow
from kb.db.claim_tables import claim_revision_table, user_table


def claim_revisions(conn: sa.Connection, claim_ids: Collection[int]) -> dict[int, list[ClaimRevisionRow]]:
    """Every revision of each claim in ``claim_ids``, oldest first, with the author's name."""
    revisions, users = claim_revision_table, user_table
    out: dict[int, list[ClaimRevisionRow]] = {i: [] for i in claim_ids}
    if not out:
        return out
    rows = conn.execute(
        sa.select(revisions, users.c.name.label("author"), users.c.display_name.label("author_display"))
        .join(users, users.c.id == revisions.c.author_id)
        .where(revisions.c.claim_id.in_(list(out)))
        .order_by(revisions.c.claim_id, revisions.c.revision)
    )
    for row in rows:
        out[row.claim_id].append(ClaimRevisionRow.of(row._mapping))
    return out
