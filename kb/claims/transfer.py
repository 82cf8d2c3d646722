"""Export and import of the claim layer as JSON Lines (format ``circuit-kb/claims@2``): users, every circuit
with every revision, every claim with every revision, reviews with their history, and the activity feed.
Deterministic (sorted, one record a line), so export → import into an empty database → export gives the same
file; the keys and revision numbers are kept, so ``claim:17@3`` and ``circuit:4@2`` resolve after a move.

Never exported: password hashes, API tokens, sign-in sessions and failures (a claim file is meant to be shared;
after an import, accounts set a password with ``kb user password``; ``kb backup`` keeps them), render jobs and
their feed lines (pictures are re-rendered).

Records, in this order: ``header``, ``user``, ``circuit``, ``experiment``, ``claim``, ``activity``, then the
``trailer``: the count of each record type and the sha256 of every line before it. A record refers only to
records on earlier lines (or users already in the database). ``experiment`` is reserved: the trailer counts it
(0 today) and it sits after the circuits and before the claims that may cite one; a kb with experiments adds a
reader and a writer for it. A reader refuses a record type it does not know, so an older kb refuses a newer
file rather than importing part of it; the format number changes only when a record's meaning does.

Format 1 files (``circuit-kb/claims@1``: circuits in their current state only, no feed) still import: each of
their circuits becomes revision 1 of itself.

Import refuses a file without a valid trailer (a truncated or edited file), then validates every record before
it writes anything (kinds, statuses, roles, gapless revisions, users that exist, subjects that resolve, dates),
then writes it all in the caller's one transaction. Each refusal is one line naming the line and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from kb.claims import edge_lists
from kb.claims import transfer_records as records_of
from kb.claims.errors import BadInput
from kb.claims.transfer_fields import Bad, ts
from kb.claims.transfer_records import EXPORTED_ACTIVITY, Seen
from kb.claims.transfer_write import write
from kb.db.annotation_tables import activity_table, circuit_revision_table
from kb.db.catalog import load_catalog
from kb.db.claim_tables import (
    circuit_table,
    claim_revision_table,
    claim_table,
    review_revision_table,
    review_table,
    user_table,
)

FORMAT = "circuit-kb/claims@2"
FORMAT_1 = "circuit-kb/claims@1"
Reader = Callable[[dict[str, Any], Seen, int], None]
# Each format's record types, in the order the trailer counts them, and the reader of each.
READERS: dict[str, dict[str, Reader]] = {
    FORMAT_1: {"user": records_of.user, "circuit": records_of.circuit_v1, "claim": records_of.claim},
    FORMAT: {
        "user": records_of.user,
        "circuit": records_of.circuit,
        "experiment": records_of.experiment,
        "claim": records_of.claim,
        "activity": records_of.activity,
    },
}


def export_lines(conn: sa.Connection) -> Iterator[str]:
    """Every record, then the trailer (counts and the sha256 of the lines before it)."""
    digest, counts = hashlib.sha256(), dict.fromkeys(READERS[FORMAT], 0)
    for text in _records(conn):
        digest.update(text.encode("utf-8") + b"\n")
        kind = json.loads(text)["type"]
        if kind in counts:
            counts[kind] += 1
        yield text
    yield _line({"type": "trailer", "counts": counts, "sha256": digest.hexdigest()})


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _records(conn: sa.Connection) -> Iterator[str]:
    u = user_table
    names = {row.id: row.name for row in conn.execute(sa.select(u.c.id, u.c.name))}
    yield _line({"type": "header", "format": FORMAT})
    for row in conn.execute(sa.select(u).order_by(u.c.name)):
        yield _line(
            {
                "type": "user",
                "name": row.name,
                "display_name": row.display_name,
                "role": row.role,
                "created_at": ts(row.created_at),
                "disabled_at": ts(row.disabled_at),
            }
        )
    yield from _circuits(conn, names)
    yield from _experiments(conn, names)
    yield from _claims(conn, names)
    yield from _activity(conn, names)


def _circuits(conn: sa.Connection, names: dict[int, str]) -> Iterator[str]:
    ci, cr = circuit_table, circuit_revision_table
    revs: dict[int, list[Any]] = {}
    rows = conn.execute(sa.select(cr).order_by(cr.c.circuit_id, cr.c.revision)).all()
    lists = edge_lists.load(conn, {row.edges_sha256 for row in rows})  # each distinct list read once
    for row in rows:
        revs.setdefault(row.circuit_id, []).append(
            {
                "revision": row.revision,
                "author": names[row.author_id],
                "created_at": ts(row.created_at),
                "name": row.name,
                "description": row.description,
                "neurons": row.neurons,
                "edges": lists[row.edges_sha256],
                "message": row.message,
            }
        )
    for row in conn.execute(sa.select(ci.c.id, ci.c.model_key, ci.c.created_by, ci.c.created_at).order_by(ci.c.id)):
        yield _line(
            {
                "type": "circuit",
                "key": f"circuit:{row.id}",
                "model": row.model_key,
                "created_by": names[row.created_by],
                "created_at": ts(row.created_at),
                "revisions": revs.get(row.id, []),
            }
        )


def _experiments(conn: sa.Connection, names: dict[int, str]) -> Iterator[str]:
    from kb.db.experiment_tables import experiment_table as x

    for row in conn.execute(sa.select(x).order_by(x.c.id)):
        yield _line(
            {
                "type": "experiment",
                "key": f"experiment:{row.id}",
                "circuit": f"circuit:{row.circuit_id}@{row.circuit_revision}",
                "model": row.model_key,
                "model_sha256": row.model_sha256,
                "dataset": row.dataset,
                "ablation": row.ablation,
                "params": row.params,
                "results": row.results,
                "versions": row.versions,
                "requested_by": names.get(row.requested_by) if row.requested_by is not None else None,
                "created_at": ts(row.created_at),
            }
        )


def _pinned(circuit_id: int | None, revision: int | None) -> str | None:
    """The circuit a claim revision is about, with the revision it pinned: circuit:N@R."""
    if circuit_id is None:
        return None
    return f"circuit:{circuit_id}@{revision}" if revision is not None else f"circuit:{circuit_id}"


def _claims(conn: sa.Connection, names: dict[int, str]) -> Iterator[str]:
    c, r, rv, rh = claim_table, claim_revision_table, review_table, review_revision_table
    revs: dict[int, list[Any]] = {}
    for row in conn.execute(sa.select(r).order_by(r.c.claim_id, r.c.revision)):
        revs.setdefault(row.claim_id, []).append(
            {
                "revision": row.revision,
                "author": names[row.author_id],
                "created_at": ts(row.created_at),
                "label": row.label,
                "body": row.body,
                "kind": row.kind,
                "status": row.status,
                "confidence": row.confidence,
                "subjects": row.subjects,
                "evidence": row.evidence,
                "circuit": _pinned(row.circuit_id, row.circuit_revision),
                "message": row.message,
            }
        )
    history: dict[tuple[int, int], list[Any]] = {}
    for row in conn.execute(sa.select(rh).order_by(rh.c.claim_id, rh.c.user_id, rh.c.revision)):
        history.setdefault((row.claim_id, row.user_id), []).append(
            {
                "revision": row.revision,
                "verdict": row.verdict,
                "comment": row.comment,
                "claim_revision": row.claim_revision,
                "created_at": ts(row.created_at),
            }
        )
    reviews: dict[int, list[Any]] = {}
    for row in conn.execute(sa.select(rv).order_by(rv.c.claim_id, rv.c.user_id)):
        reviews.setdefault(row.claim_id, []).append(
            {
                "user": names[row.user_id],
                "created_at": ts(row.created_at),
                "history": history.get((row.claim_id, row.user_id), []),
            }
        )
    for row in conn.execute(sa.select(c).order_by(c.c.id)):
        yield _line(
            {
                "type": "claim",
                "key": f"claim:{row.id}",
                "model": row.model_key,
                "origin": row.origin,
                "created_by": names[row.created_by],
                "created_at": ts(row.created_at),
                "revisions": revs.get(row.id, []),
                "reviews": sorted(reviews.get(row.id, []), key=lambda x: x["user"]),
            }
        )


def _activity(conn: sa.Connection, names: dict[int, str]) -> Iterator[str]:
    t = activity_table
    for row in conn.execute(sa.select(t).where(t.c.kind.in_(EXPORTED_ACTIVITY)).order_by(t.c.id)):
        yield _line(
            {
                "type": "activity",
                "at": ts(row.at),
                "kind": row.kind,
                "model": row.model_key,
                "subject": row.subject,
                "summary": row.summary,
                "actor": names[row.actor_id] if row.actor_id is not None else None,
                "neurons": row.neurons,
                "claim": f"claim:{row.claim_id}" if row.claim_id is not None else None,
                "circuit": f"circuit:{row.circuit_id}" if row.circuit_id is not None else None,
            }
        )


def _decode(raw: str | bytes, n: int) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"line {n}: not UTF-8 text (byte {exc.start + 1})") from None


def read_file(raw_lines: Iterable[str | bytes]) -> list[tuple[int, dict[str, Any]]]:
    """The records of an export with their line numbers, after checking the trailer (BadInput if truncated)."""
    digest, texts = hashlib.sha256(), []
    for n, raw in enumerate(raw_lines, start=1):
        texts.append((n, _decode(raw, n)))
    if not texts:
        raise BadInput("the file is empty: not an export of circuit-kb/claims")
    n_last, last = texts[-1]
    try:
        trailer = json.loads(last)
    except json.JSONDecodeError:
        trailer = None
    if not isinstance(trailer, dict) or trailer.get("type") != "trailer":
        raise BadInput(f"line {n_last}: no trailer: the file is truncated (or not a complete export)")
    records = []
    for n, text in texts[:-1]:
        digest.update(text.rstrip("\r\n").encode("utf-8") + b"\n")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"line {n}: not JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise BadInput(f"line {n}: type: missing (a record is an object with a type)")
        records.append((n, obj))
    if trailer.get("sha256") != digest.hexdigest():
        raise BadInput(f"line {n_last}: sha256: the lines before the trailer do not match it (truncated or edited)")
    counts = dict.fromkeys(READERS[_format(records)], 0)
    for _, obj in records:
        if obj["type"] in counts:
            counts[obj["type"]] += 1
    if trailer.get("counts") != counts:
        raise BadInput(f"line {n_last}: counts: the trailer says {trailer.get('counts')}, the file holds {counts}")
    return records


def _format(records: list[tuple[int, dict[str, Any]]]) -> str:
    """The format the header names (BadInput if there is no header first, or an unknown format)."""
    n, first = records[0] if records else (1, {})
    if first.get("type") != "header":
        raise BadInput(f"line {n}: type: the first record must be the {FORMAT} header")
    if first.get("format") not in READERS:
        known = ", ".join(sorted(READERS))
        raise BadInput(f"line {n}: format: {str(first.get('format'))[:60]!r} is not one of {known}")
    return str(first["format"])


def import_lines(conn: sa.Connection, lines: Iterable[str | bytes]) -> dict[str, int]:
    """Into a database with no claims or circuits yet (keys are kept: claim:17 stays claim:17). Nothing is
    written unless every record is valid; the caller's transaction makes the writes all or nothing."""
    records = read_file(lines)
    for table in (claim_table, circuit_table):
        if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
            raise BadInput("this database already holds claims or circuits: import into one with neither")
    existing = {row.name for row in conn.execute(sa.select(user_table.c.name))}
    return write(conn, validate(conn, records, existing))


def validate(conn: sa.Connection, records: list[tuple[int, dict[str, Any]]], existing: set[str]) -> Seen:
    """Every record checked, in file order, by its format's reader for its type (BadInput on the first fault)."""
    readers = READERS[_format(records)]
    seen = Seen(load_catalog(conn), existing)
    for n, obj in records[1:]:
        try:
            kind = obj["type"]
            if kind == "header":
                raise Bad("type", "the header comes once, first")
            if kind not in readers:
                raise Bad("type", f"unknown record type {kind!r}")
            readers[kind](obj, seen, n)
        except Bad as bad:
            raise BadInput(f"line {n}: {bad.field}: {bad.message}") from None
    return seen
