"""Circuits: a named set of neurons and the edges between them, and their check against the weights.

``check`` answers, for each stated edge, whether the weight graph has it, with which weight and sign, and
where it ranks among the target's inputs, so "4c:447 is built from 4b:373 and 4b:237" is checked by a machine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from kb.claims import activity, edge_lists, textdiff
from kb.claims.accounts import Account
from kb.claims.errors import BadInput, EditConflict, Forbidden, NotFound
from kb.claims.ids import is_row_id
from kb.claims.rows import CircuitRevisionRow, CircuitRow, ClaimRow, JsonDoc
from kb.db.annotation_tables import circuit_edge_list_table, circuit_revision_table
from kb.db.claim_tables import circuit_table, claim_table, user_table
from kb.db.tables import utcnow
from kb.graph.keys import Catalog, KeyProblem
from kb.graph.store import ModelGraph

MAX_NEURONS = 500
MAX_EDGES = 2000
MAX_NOTE = 2000
MAX_DESCRIPTION = 20_000
PATCH_FIELDS = ("name", "description", "addNeurons", "removeNeurons", "edges", "removeEdges")


def _key(catalog: Catalog, text: str, what: str) -> str:
    try:
        return str(catalog.neuron(text))
    except KeyProblem as exc:
        raise (NotFound if exc.code == "NOT_FOUND" else BadInput)(f"{what}: {exc}") from None


def _edges(catalog: Catalog, edges: list[dict[str, Any]], what: str = "edge") -> list[dict[str, Any]]:
    out = []
    for i, e in enumerate(edges):
        s = _key(catalog, e.get("source", ""), f"{what} {i + 1} source")
        t = _key(catalog, e.get("target", ""), f"{what} {i + 1} target")
        out.append({"source": s, "target": t, "note": (e.get("note") or "")[:MAX_NOTE]})
    return out


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise BadInput("a circuit needs a name of 1 to 200 characters")
    return name


def _description(text: str) -> str:
    if len(text or "") > MAX_DESCRIPTION:
        raise BadInput(f"a circuit's description has at most {MAX_DESCRIPTION} characters")
    return text or ""


def _validate(neurons: list[str], edges: list[dict[str, Any]]) -> str:
    """The circuit's one model; refuses too large circuits and mixed models."""
    if len(neurons) > MAX_NEURONS or len(edges) > MAX_EDGES:
        raise BadInput(f"a circuit has at most {MAX_NEURONS} neurons and {MAX_EDGES} edges")
    if not neurons:
        raise BadInput("a circuit needs neurons")
    models = {k.split("/", 1)[0] for k in neurons}
    if len(models) > 1:
        raise BadInput("a circuit's neurons belong to one model")
    return models.pop()


def create_circuit(
    conn: sa.Connection,
    catalog: Catalog,
    actor: Account,
    name: str,
    neurons: list[str],
    edges: list[dict[str, Any]],
    description: str = "",
    message: str = "",
) -> int:
    """A new circuit at revision 1 (its first immutable revision written beside it)."""
    if not actor.at_least("editor"):
        raise Forbidden("creating circuits needs the editor role")
    name, description = _name(name), _description(description)
    if len(neurons) > MAX_NEURONS or len(edges) > MAX_EDGES:
        raise BadInput(f"a circuit has at most {MAX_NEURONS} neurons and {MAX_EDGES} edges")
    keys = [_key(catalog, n, "neuron") for n in neurons]
    clean_edges = _merge_edges([], _edges(catalog, edges))
    keys = list(dict.fromkeys(keys + [k for e in clean_edges for k in (e["source"], e["target"])]))
    model = _validate(keys, clean_edges)
    t = circuit_table
    at = utcnow()
    circuit_id: int = conn.execute(
        sa.insert(t)
        .values(
            model_key=model,
            name=name,
            description=description,
            neurons=keys,
            edges=clean_edges,
            created_by=actor.id,
            created_at=at,
            revision=1,
        )
        .returning(t.c.id)
    ).scalar_one()
    new = {"name": name, "description": description, "neurons": keys, "edges": clean_edges}
    _write_revision(conn, actor, circuit_id, 1, new, message, at)
    activity.record(
        conn,
        "CIRCUIT",
        model,
        f"circuit:{circuit_id}@1",
        f'{actor.name} made circuit "{name}"',
        actor.id,
        keys,
        circuit_id=circuit_id,
    )
    return circuit_id


def _merge_edges(current: list[dict[str, Any]], upserts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Edges keyed by (source, target): an upsert of an existing pair replaces its note, keeping its place."""
    out = {(e["source"], e["target"]): dict(e) for e in current}
    for e in upserts:
        out[(e["source"], e["target"])] = e
    return list(out.values())


def _write_revision(
    conn: sa.Connection,
    actor: Account,
    circuit_id: int,
    revision: int,
    new: dict[str, Any],
    message: str,
    at: datetime,
) -> None:
    """The revision row; its edges go to the shared edge lists (stored once whatever the number of revisions)."""
    conn.execute(
        sa.insert(circuit_revision_table).values(
            circuit_id=circuit_id,
            revision=revision,
            author_id=actor.id,
            created_at=at,
            message=(message or "")[:500],
            name=new["name"],
            description=new["description"],
            neurons=new["neurons"],
            edges_sha256=edge_lists.store(conn, new["edges"]),
        )
    )


def update_circuit(
    conn: sa.Connection,
    catalog: Catalog,
    actor: Account,
    circuit_id: int,
    expected_revision: int,
    patch: dict[str, Any],
    message: str = "",
) -> int:
    """Apply ``patch`` to the current revision and commit it as revision expected + 1; returns that number.

    Circuits are edited together: any editor may edit any circuit (every revision is kept and attributed).
    ``patch`` keys: name, description, addNeurons, removeNeurons (their edges go too), edges (add, or replace
    the note of an existing source → target pair), removeEdges ([{source, target}]). The check is a conditional
    UPDATE (``WHERE revision = :expected``) in the committing transaction: of two concurrent edits of one
    revision exactly one commits, the other gets EDIT_CONFLICT with the current revision.
    """
    if not actor.at_least("editor"):
        raise Forbidden("editing circuits needs the editor role")
    unknown = set(patch) - set(PATCH_FIELDS)
    if unknown:
        raise BadInput(f"cannot edit {', '.join(sorted(unknown))} here")
    current = get(conn, circuit_id)
    if current.revision != expected_revision:
        raise _conflict(circuit_id, current.revision, expected_revision)
    was: dict[str, Any] = {
        "name": current.name,
        "description": current.description,
        "neurons": current.neurons,
        "edges": current.edges,
    }
    new = dict(was)
    if patch.get("name") is not None:
        new["name"] = _name(patch["name"])
    if patch.get("description") is not None:
        new["description"] = _description(patch["description"])
    gone = {_key(catalog, n, "removed neuron") for n in patch.get("removeNeurons") or []}
    drop = {(e["source"], e["target"]) for e in _edges(catalog, patch.get("removeEdges") or [], "removed edge")}
    missing = drop - {(e["source"], e["target"]) for e in new["edges"]}
    if missing:
        s, t = sorted(missing)[0]
        raise BadInput(f"circuit:{circuit_id} has no edge {s} -> {t} to remove")
    edges = [
        e for e in new["edges"] if (e["source"], e["target"]) not in drop and not {e["source"], e["target"]} & gone
    ]
    edges = _merge_edges(edges, _edges(catalog, patch.get("edges") or []))
    added = [_key(catalog, n, "added neuron") for n in patch.get("addNeurons") or []]
    neurons = [n for n in new["neurons"] if n not in gone] + added
    neurons += [k for e in edges for k in (e["source"], e["target"])]
    new["neurons"], new["edges"] = list(dict.fromkeys(neurons)), edges
    if _validate(new["neurons"], new["edges"]) != current.model_key:
        raise BadInput("a circuit cannot move to another model")
    if new == was:
        raise BadInput("the patch changes nothing")
    t = circuit_table
    at = utcnow()
    done = conn.execute(
        sa.update(t)
        .where(t.c.id == circuit_id, t.c.revision == expected_revision)
        # only what changed: an unchanged edge list is not written again (on PostgreSQL its TOAST value is kept)
        .values(revision=expected_revision + 1, **{k: v for k, v in new.items() if v != was[k]})
    ).rowcount
    if not done:
        now: int | None = conn.execute(sa.select(t.c.revision).where(t.c.id == circuit_id)).scalar()
        raise _conflict(circuit_id, now, expected_revision)
    revision = expected_revision + 1
    _write_revision(conn, actor, circuit_id, revision, new, message, at)
    activity.record(
        conn,
        "CIRCUIT",
        current.model_key,
        f"circuit:{circuit_id}@{revision}",
        f'{actor.name} edited circuit "{new["name"]}" (revision {revision})',
        actor.id,
        new["neurons"],
        circuit_id=circuit_id,
    )
    return revision


def _conflict(circuit_id: int, current: int | None, expected: int) -> EditConflict:
    return EditConflict(
        f"circuit:{circuit_id} is at revision {current}, not {expected}: read it again and re-apply your edit",
        currentRevision=current,
    )


def claims_about(conn: sa.Connection, circuit_id: int) -> list[ClaimRow]:
    """The claims whose current revision is about this circuit, oldest first."""
    t = claim_table
    return [
        ClaimRow.of(r._mapping) for r in conn.execute(sa.select(t).where(t.c.circuit_id == circuit_id).order_by(t.c.id))
    ]


def listing(
    conn: sa.Connection, model: str | None, neuron: str | None, offset: int, limit: int
) -> tuple[list[CircuitRow], int]:
    """Circuits newest first, of one model and/or with one neuron (a canonical key); the page and the total."""
    t = circuit_table
    where = []
    if model:
        where.append(t.c.model_key == model)
    if neuron:  # the JSON list of canonical keys holds the key as a quoted string, on PostgreSQL and SQLite
        pattern = '%"' + neuron.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
        where.append(sa.cast(t.c.neurons, sa.Text).like(pattern, escape="\\"))
    rows = [
        CircuitRow.current(r._mapping)
        for r in conn.execute(sa.select(t).where(*where).order_by(t.c.id.desc()).offset(offset).limit(limit))
    ]
    if offset == 0 and len(rows) < limit:  # the whole list is here: no need to count
        return rows, len(rows)
    return rows, conn.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar_one()


def circuits_by_id(conn: sa.Connection, circuit_ids: Collection[int]) -> dict[int, CircuitRow]:
    """The current rows of these circuits, by id, in one statement (absent ids are left out)."""
    if not circuit_ids:
        return {}
    t = circuit_table
    return {
        r.id: CircuitRow.current(r._mapping) for r in conn.execute(sa.select(t).where(t.c.id.in_(set(circuit_ids))))
    }


def get(conn: sa.Connection, circuit_id: int) -> CircuitRow:
    """The circuit as it is now (NotFound if there is none)."""
    t = circuit_table
    row = conn.execute(sa.select(t).where(t.c.id == circuit_id)).first()
    if row is None:
        raise NotFound(f"no circuit:{circuit_id}")
    return CircuitRow.current(row._mapping)


def parse_key(key: str) -> tuple[int, int | None]:
    """circuit:3 -> (3, None); circuit:3@2 -> (3, 2)."""
    text = (key or "").strip()
    if text.startswith("circuit:"):
        text = text[len("circuit:") :]
    number, _, rev = text.partition("@")
    if not is_row_id(number) or (_ and not is_row_id(rev)):
        raise BadInput(f"{key!r} is not a circuit key (circuit:3, or circuit:3@2 for a revision)")
    return int(number), int(rev) if rev else None


def revisions(
    conn: sa.Connection, circuit_ids: list[int], with_edges: bool = True
) -> dict[int, list[CircuitRevisionRow]]:
    """Every revision of each circuit, oldest first, with the author's name and its edge list's ``edge_count`` and
    ``edges_size`` (bytes); with ``with_edges`` also its ``edges``, each distinct list read once and shared by the
    rows (without: ``edges`` is None, and ``with_edges`` adds them later)."""
    r, u, e = circuit_revision_table, user_table, circuit_edge_list_table
    out: dict[int, list[CircuitRevisionRow]] = {i: [] for i in circuit_ids}
    rows = conn.execute(
        sa.select(
            r,
            u.c.name.label("author"),
            u.c.display_name.label("author_display"),
            e.c.edge_count,
            e.c.size.label("edges_size"),
        )
        .join(u, u.c.id == r.c.author_id)
        .join(e, e.c.sha256 == r.c.edges_sha256)
        .where(r.c.circuit_id.in_(circuit_ids))
        .order_by(r.c.circuit_id, r.c.revision)
    )
    for row in rows:
        out[row.circuit_id].append(CircuitRevisionRow.of(row._mapping))
    if with_edges:
        return {i: with_edge_lists(conn, revs) for i, revs in out.items()}
    return out


def with_edge_lists(conn: sa.Connection, revs: list[CircuitRevisionRow]) -> list[CircuitRevisionRow]:
    """The revisions with their ``edges``, each distinct list read once (one statement) and shared by the rows."""
    lists = edge_lists.load(conn, {x.edges_sha256 for x in revs})
    return [replace(x, edges=lists[x.edges_sha256]) for x in revs]


def at_revision(conn: sa.Connection, circuit_id: int, revision: int | None) -> CircuitRow:
    """The circuit as it was at ``revision`` (the current one if None), with ``current_revision`` its newest."""
    row = get(conn, circuit_id)
    if revision is None or revision == row.revision:
        return row
    r = circuit_revision_table
    rev = conn.execute(sa.select(r).where(r.c.circuit_id == circuit_id, r.c.revision == revision)).first()
    if rev is None:
        raise NotFound(f"no circuit:{circuit_id}@{revision}: it has revisions 1..{row.revision}")
    edges = edge_lists.load(conn, [rev.edges_sha256])[rev.edges_sha256]
    return replace(row, name=rev.name, description=rev.description, neurons=rev.neurons, edges=edges, revision=revision)


def circuits_at(
    conn: sa.Connection, pins: Collection[tuple[int, int | None]]
) -> dict[tuple[int, int | None], CircuitRow]:
    """Circuits at pinned revisions ((id, revision); None: the current one), as ``at_revision`` shapes them
    (absent circuits and revisions are left out)."""
    found: dict[tuple[int, int | None], CircuitRow] = {}
    current = circuits_by_id(conn, {i for i, _ in pins})
    older = [(i, rev) for i, rev in set(pins) if i in current and rev is not None and rev != current[i].revision]
    for i, rev in set(pins):
        if i in current and (rev is None or rev == current[i].revision):
            found[(i, rev)] = current[i]
    if older:
        r = circuit_revision_table
        rows = conn.execute(sa.select(r).where(sa.tuple_(r.c.circuit_id, r.c.revision).in_(older))).all()
        lists = edge_lists.load(conn, {x.edges_sha256 for x in rows})
        for x in rows:
            found[(x.circuit_id, x.revision)] = replace(
                current[x.circuit_id],
                name=x.name,
                description=x.description,
                neurons=x.neurons,
                edges=lists[x.edges_sha256],
                revision=x.revision,
            )
    return found


def pin(conn: sa.Connection, circuit_id: int, revision: int | None) -> int:
    """The revision a claim pins: ``revision`` if the circuit has it, else (None) the circuit's current one."""
    row = conn.execute(sa.select(circuit_table.c.revision).where(circuit_table.c.id == circuit_id)).first()
    if row is None:
        raise NotFound(f"no circuit:{circuit_id}")
    if revision is None:
        return int(row.revision)
    if not 1 <= revision <= row.revision:
        raise NotFound(f"no circuit:{circuit_id}@{revision}: it has revisions 1..{row.revision}")
    return revision


@dataclass(frozen=True, slots=True)
class _Shown:
    """What a diff compares of a circuit revision."""

    revision: int
    texts: dict[str, str]  # name, description
    neurons: list[str]
    edges: list[JsonDoc]


def _shown(x: CircuitRevisionRow | Mapping[str, Any]) -> _Shown:
    if isinstance(x, CircuitRevisionRow):
        if x.edges is None:
            raise ValueError(f"circuit:{x.circuit_id}@{x.revision} was read without its edges")
        return _Shown(x.revision, {"name": x.name, "description": x.description}, x.neurons, x.edges)
    texts = {k: x.get(k) or "" for k in ("name", "description")}
    return _Shown(x["revision"], texts, x["neurons"], x["edges"])


def diff(
    before: CircuitRevisionRow | Mapping[str, Any],
    after: CircuitRevisionRow | Mapping[str, Any],
    check: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """What changed between two revisions (revision rows read with their edges, or the pages' GraphQL answers'
    revisions): text fields (with a unified diff, bounded: kb.claims.textdiff), neurons and edges. ``check`` runs
    between steps of the text diff (a request's deadline)."""
    was, now = _shown(before), _shown(after)
    fields = []
    for k in ("name", "description"):
        a, b = was.texts[k], now.texts[k]
        if a != b:
            p = textdiff.unified(a, b, f"@{was.revision}", f"@{now.revision}", check)
            fields.append({"field": k, "before": a, "after": b, "patch": p.text, "too_large": p.too_large})
    old = {(e["source"], e["target"]): e for e in was.edges}
    new = {(e["source"], e["target"]): e for e in now.edges}
    had, has = set(was.neurons), set(now.neurons)  # once: not once per neuron
    return {
        "fields": fields,
        "added_neurons": [n for n in now.neurons if n not in had],
        "removed_neurons": [n for n in was.neurons if n not in has],
        "added_edges": [new[k] for k in new if k not in old],
        "removed_edges": [old[k] for k in old if k not in new],
        "changed_notes": [
            {"source": k[0], "target": k[1], "before": old[k]["note"], "after": new[k]["note"]}
            for k in new
            if k in old and old[k]["note"] != new[k]["note"]
        ],
    }


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


def check(graph: ModelGraph, circuit: CircuitRow) -> list[EdgeCheck]:
    out = []
    for e in circuit.edges:
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
