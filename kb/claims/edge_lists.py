"""Circuit edge lists stored once each, keyed by the sha256 of their canonical JSON.

A circuit revision names its edge list by that hash, so a revision that keeps the edges (a rename, a new
description) adds no edges to the database, and reading many revisions reads each distinct list once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from kb.db.annotation_tables import circuit_edge_list_table


def canonical(edges: list[dict[str, Any]]) -> str:
    """The edge list as canonical JSON: edges in their order, each {note, source, target}, no spaces."""
    rows = [{"note": e.get("note") or "", "source": e["source"], "target": e["target"]} for e in edges]
    return json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def store(conn: sa.Connection, edges: list[dict[str, Any]]) -> str:
    """The list's sha256, inserting the list unless a revision already stored it."""
    text = canonical(edges)
    sha = digest(text)
    t = circuit_edge_list_table
    if conn.execute(sa.select(t.c.sha256).where(t.c.sha256 == sha)).first() is None:
        # two writers of one new list race: the second's insert is the same row; ignore it on the primary key
        values = {"sha256": sha, "edges": json.loads(text), "edge_count": len(edges), "size": len(text.encode())}
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(t).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(t).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
    return sha


def load(conn: sa.Connection, shas: Collection[str]) -> dict[str, list[dict[str, Any]]]:
    """The lists of these hashes, each read once."""
    if not shas:
        return {}
    t = circuit_edge_list_table
    return {
        r.sha256: list(r.edges) for r in conn.execute(sa.select(t.c.sha256, t.c.edges).where(t.c.sha256.in_(set(shas))))
    }


def size(edges: list[dict[str, Any]]) -> int:
    """Bytes of the list's canonical JSON: what it weighs in a stored row and, about, in an answer."""
    return len(canonical(edges).encode("utf-8"))
