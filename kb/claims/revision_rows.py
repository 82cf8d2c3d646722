"""Revision rows with their authors' names, for claims and circuits alike (one statement for many owners)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kb.db.claim_tables import user_table


def by_owner(conn: sa.Connection, revisions: sa.Table, owner: str, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every revision of each id in ``ids`` (``revisions.c[owner]``), oldest first, with the author's name."""
    users = user_table
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    rows = conn.execute(
        sa.select(revisions, users.c.name.label("author"), users.c.display_name.label("author_display"))
        .join(users, users.c.id == revisions.c.author_id)
        .where(revisions.c[owner].in_(ids))
        .order_by(revisions.c[owner], revisions.c.revision)
    )
    for row in rows:
        out[row._mapping[owner]].append(dict(row._mapping))
    return out
