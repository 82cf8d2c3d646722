"""Claims and neurons by text: PostgreSQL full-text search (websearch syntax), SQLite FTS5 (words ANDed).

Filters by model, layer, kind and status; results ranked by relevance, then claim number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kb.claims.errors import BadInput

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Filters:
    model: str | None = None
    layer: str | None = None  # layer key within the model
    kind: str | None = None
    status: str | None = None


def _where(f: Filters) -> tuple[str, dict[str, Any]]:
    parts, params = [], {}
    if f.model:
        parts.append("c.model_key = :model")
        params["model"] = f.model
    if f.layer:
        parts.append(
            "EXISTS (SELECT 1 FROM claim_subject s WHERE s.claim_id = c.id AND s.model_key = :model "
            "AND s.layer_key = :layer)"
        )
        params["layer"] = f.layer
    if f.kind:
        parts.append("c.kind = :kind")
        params["kind"] = f.kind
    if f.status:
        parts.append("c.status = :status")
        params["status"] = f.status
    return "".join(f" AND {p}" for p in parts), params


def filtered_claim_count(conn: sa.Connection, filters: Filters) -> int:
    """How many claims pass the filters."""
    where, params = _where(filters)
    total: int = conn.execute(sa.text(f"SELECT count(*) FROM claim c WHERE 1=1{where}"), params).scalar_one()
    return total


def filtered_claim_ids(
    conn: sa.Connection, filters: Filters, offset: int, limit: int, newest_first: bool = False
) -> list[int]:
    """The ids of a page of the claims that pass the filters, oldest first (or newest first)."""
    where, params = _where(filters)
    order = "c.id DESC" if newest_first else "c.id"
    rows = conn.execute(
        sa.text(f"SELECT c.id FROM claim c WHERE 1=1{where} ORDER BY {order} LIMIT :limit OFFSET :offset"),
        {**params, "limit": limit, "offset": offset},
    )
    return [r[0] for r in rows]


def _match(conn: sa.Connection, text: str) -> tuple[str, str, str, dict[str, Any]]:
    """(FROM clause, WHERE condition, ORDER BY, params) of the text match for this database."""
    words = _WORD.findall(text or "")
    if not words:
        raise BadInput("search text has no words")
    if len(text) > 500:
        raise BadInput("search text is longer than 500 characters")
    if conn.dialect.name == "postgresql":
        return (
            "claim c",
            "c.search @@ websearch_to_tsquery('english', :q)",
            "ts_rank(c.search, websearch_to_tsquery('english', :q)) DESC, c.id",
            {"q": text},
        )
    query = " ".join(f'"{w}"' for w in words)
    return (
        "claim_fts JOIN claim c ON c.id = claim_fts.rowid",
        "claim_fts MATCH :q",
        "bm25(claim_fts, 4.0, 1.0), c.id",
        {"q": query},
    )


def search_claims(conn: sa.Connection, text: str, filters: Filters, offset: int, limit: int) -> tuple[list[int], int]:
    """(claim ids of the page, total matches)."""
    source, cond, order, params = _match(conn, text)
    where, fparams = _where(filters)
    params |= fparams
    total = conn.execute(sa.text(f"SELECT count(*) FROM {source} WHERE {cond}{where}"), params).scalar_one()
    ids = [
        r[0]
        for r in conn.execute(
            sa.text(f"SELECT c.id FROM {source} WHERE {cond}{where} ORDER BY {order} LIMIT :limit OFFSET :offset"),
            {**params, "limit": limit, "offset": offset},
        )
    ]
    return ids, total


def search_neurons(conn: sa.Connection, text: str, filters: Filters, offset: int, limit: int) -> tuple[list[str], int]:
    """(canonical neuron keys of the page, total): subjects of matching claims, best-ranked claim first."""
    source, cond, order, params = _match(conn, text)
    where, fparams = _where(filters)
    params |= fparams
    layer_cond = " AND s.layer_key = :layer" if filters.layer else ""
    ranked = f"SELECT c.id AS claim_id, ROW_NUMBER() OVER (ORDER BY {order}) AS pos FROM {source} WHERE {cond}{where}"
    base = (
        f"SELECT s.model_key, s.layer_key, s.neuron_index, MIN(r.pos) AS best FROM ({ranked}) r "
        f"JOIN claim_subject s ON s.claim_id = r.claim_id WHERE 1=1{layer_cond} "
        f"GROUP BY s.model_key, s.layer_key, s.neuron_index"
    )
    total = conn.execute(sa.text(f"SELECT count(*) FROM ({base}) n"), params).scalar_one()
    rows = conn.execute(
        sa.text(
            f"SELECT * FROM ({base}) n ORDER BY best, model_key, layer_key, neuron_index LIMIT :limit OFFSET :offset"
        ),
        {**params, "limit": limit, "offset": offset},
    )
    return [f"{model}/{layer}:{index}" for model, layer, index, _ in rows], total
