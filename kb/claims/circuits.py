"""Circuits: a named set of neurons and the edges between them, and their check against the weights.

``check`` answers, for each stated edge, whether the weight graph has it, with which weight and sign, and
where it ranks among the target's inputs, so "4c:447 is built from 4b:373 and 4b:237" is checked by a machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from kb.claims.accounts import Account
from kb.claims.errors import BadInput, Forbidden, NotFound
from kb.db.claim_tables import Circuit
from kb.db.claim_tables import Claim as ClaimTable
from kb.db.tables import utcnow
from kb.graph.keys import Catalog, KeyProblem
from kb.graph.store import ModelGraph

MAX_NEURONS = 500
MAX_EDGES = 2000


def _key(catalog: Catalog, text: str, what: str) -> str:
    try:
        return str(catalog.neuron(text))
    except KeyProblem as exc:
        raise (NotFound if exc.code == "NOT_FOUND" else BadInput)(f"{what}: {exc}") from None


def create_circuit(
    conn: sa.Connection,
    catalog: Catalog,
    actor: Account,
    name: str,
    neurons: list[str],
    edges: list[dict],
    description: str = "",
) -> int:
    if not actor.at_least("editor"):
        raise Forbidden("creating circuits needs the editor role")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise BadInput("a circuit needs a name of 1 to 200 characters")
    if len(neurons) > MAX_NEURONS or len(edges) > MAX_EDGES:
        raise BadInput(f"a circuit has at most {MAX_NEURONS} neurons and {MAX_EDGES} edges")
    keys = [_key(catalog, n, "neuron") for n in neurons]
    clean_edges = []
    for i, e in enumerate(edges):
        s, t = (
            _key(catalog, e.get("source", ""), f"edge {i + 1} source"),
            _key(catalog, e.get("target", ""), f"edge {i + 1} target"),
        )
        clean_edges.append({"source": s, "target": t, "note": (e.get("note") or "")[:2000]})
        keys += [s, t]
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise BadInput("a circuit needs neurons")
    models = {k.split("/", 1)[0] for k in keys}
    if len(models) > 1:
        raise BadInput("a circuit's neurons belong to one model")
    t = Circuit.__table__
    return conn.execute(
        sa.insert(t)
        .values(
            model_key=models.pop(),
            name=name,
            description=description or "",
            neurons=keys,
            edges=clean_edges,
            created_by=actor.id,
            created_at=utcnow(),
        )
        .returning(t.c.id)
    ).scalar_one()


def claims_about(conn: sa.Connection, circuit_id: int) -> list[dict]:
    """The claims whose current revision is about this circuit, oldest first."""
    t = ClaimTable.__table__
    return [dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.circuit_id == circuit_id).order_by(t.c.id))]


def listing(
    conn: sa.Connection, model: str | None, neuron: str | None, offset: int, limit: int
) -> tuple[list[dict], int]:
    """Circuits newest first, of one model and/or with one neuron (a canonical key); the page and the total."""
    t = Circuit.__table__
    where = []
    if model:
        where.append(t.c.model_key == model)
    if neuron:  # the JSON list of canonical keys holds the key as a quoted string, on PostgreSQL and SQLite
        pattern = '%"' + neuron.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
        where.append(sa.cast(t.c.neurons, sa.Text).like(pattern, escape="\\"))
    rows = [
        dict(r._mapping)
        for r in conn.execute(sa.select(t).where(*where).order_by(t.c.id.desc()).offset(offset).limit(limit))
    ]
    if offset == 0 and len(rows) < limit:  # the whole list is here: no need to count
        return rows, len(rows)
    return rows, conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one()


def get(conn: sa.Connection, circuit_id: int) -> dict:
    t = Circuit.__table__
    row = conn.execute(sa.select(t).where(t.c.id == circuit_id)).first()
    if row is None:
        raise NotFound(f"no circuit:{circuit_id}")
    return dict(row._mapping)


@dataclass(frozen=True)
class EdgeCheck:
    source: str
    target: str
    note: str
    exists: bool
    weight: float | None
    magnitude: float | None
    sign: str  # POSITIVE | NEGATIVE | ZERO | ABSENT
    rank: int | None  # 1 = the target's strongest excitatory input (by weight)
    inputs: int | None  # how many inputs the target has
    reason: str


def check(graph: ModelGraph, circuit: dict) -> list[EdgeCheck]:
    out = []
    for e in circuit["edges"]:
        s_layer, s_index = e["source"].split("/", 1)[1].rsplit(":", 1)
        t_layer, t_index = e["target"].split("/", 1)[1].rsplit(":", 1)
        try:
            s = graph.ordinal(s_layer, int(s_index))
            t = graph.ordinal(t_layer, int(t_index))
        except (KeyError, IndexError):
            out.append(
                EdgeCheck(
                    e["source"],
                    e["target"],
                    e["note"],
                    False,
                    None,
                    None,
                    "ABSENT",
                    None,
                    None,
                    "a unit is not in the model",
                )
            )
            continue
        rows = graph.inputs
        lo, hi = int(rows.indptr[t]), int(rows.indptr[t + 1])
        hits = np.nonzero(rows.other[lo:hi] == s)[0]
        if not len(hits):
            reason = (
                "the source is not in the layer just before the target: no direct edge (a path query shows the chain)"
            )
            out.append(
                EdgeCheck(e["source"], e["target"], e["note"], False, None, None, "ABSENT", None, hi - lo, reason)
            )
            continue
        p = lo + int(hits[0])
        w = float(rows.weight[p])
        sign = "POSITIVE" if w > 0 else "NEGATIVE" if w < 0 else "ZERO"
        out.append(
            EdgeCheck(
                e["source"],
                e["target"],
                e["note"],
                True,
                w,
                float(rows.magnitude[p]),
                sign,
                int(hits[0]) + 1,
                hi - lo,
                "",
            )
        )
    return out
