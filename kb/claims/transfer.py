"""Export and import of the claim layer as JSON Lines: users, circuits, claims with every revision, reviews
with their history. Deterministic (sorted, one record a line), so export → import into an empty database →
export gives the same file. Tokens are never exported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa

from kb.claims.claims import _write_subjects
from kb.claims.errors import BadInput
from kb.db.claim_tables import Circuit, Claim, ClaimRevision, Review, ReviewRevision, User

FORMAT = "circuit-kb/claims@1"


def _ts(v: datetime | None) -> str | None:
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat()


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def export_lines(conn: sa.Connection) -> Iterator[str]:
    u, ci, c, r = User.__table__, Circuit.__table__, Claim.__table__, ClaimRevision.__table__
    rv, rh = Review.__table__, ReviewRevision.__table__
    names = {row.id: row.name for row in conn.execute(sa.select(u.c.id, u.c.name))}

    def line(obj: dict) -> str:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    yield line({"type": "header", "format": FORMAT})
    for row in conn.execute(sa.select(u).order_by(u.c.name)):
        yield line(
            {
                "type": "user",
                "name": row.name,
                "display_name": row.display_name,
                "role": row.role,
                "created_at": _ts(row.created_at),
                "disabled_at": _ts(row.disabled_at),
            }
        )
    for row in conn.execute(sa.select(ci).order_by(ci.c.id)):
        yield line(
            {
                "type": "circuit",
                "key": f"circuit:{row.id}",
                "model": row.model_key,
                "name": row.name,
                "description": row.description,
                "neurons": row.neurons,
                "edges": row.edges,
                "created_by": names[row.created_by],
                "created_at": _ts(row.created_at),
            }
        )
    revs: dict[int, list] = {}
    for row in conn.execute(sa.select(r).order_by(r.c.claim_id, r.c.revision)):
        revs.setdefault(row.claim_id, []).append(
            {
                "revision": row.revision,
                "author": names[row.author_id],
                "created_at": _ts(row.created_at),
                "label": row.label,
                "body": row.body,
                "kind": row.kind,
                "status": row.status,
                "confidence": row.confidence,
                "subjects": row.subjects,
                "evidence": row.evidence,
                "circuit": f"circuit:{row.circuit_id}" if row.circuit_id else None,
                "message": row.message,
            }
        )
    history: dict[tuple[int, int], list] = {}
    for row in conn.execute(sa.select(rh).order_by(rh.c.claim_id, rh.c.user_id, rh.c.revision)):
        history.setdefault((row.claim_id, row.user_id), []).append(
            {
                "revision": row.revision,
                "verdict": row.verdict,
                "comment": row.comment,
                "created_at": _ts(row.created_at),
            }
        )
    reviews: dict[int, list] = {}
    for row in conn.execute(sa.select(rv).order_by(rv.c.claim_id, rv.c.user_id)):
        reviews.setdefault(row.claim_id, []).append(
            {
                "user": names[row.user_id],
                "created_at": _ts(row.created_at),
                "history": history.get((row.claim_id, row.user_id), []),
            }
        )
    for row in conn.execute(sa.select(c).order_by(c.c.id)):
        yield line(
            {
                "type": "claim",
                "key": f"claim:{row.id}",
                "model": row.model_key,
                "origin": row.origin,
                "created_by": names[row.created_by],
                "created_at": _ts(row.created_at),
                "revisions": revs.get(row.id, []),
                "reviews": sorted(reviews.get(row.id, []), key=lambda x: x["user"]),
            }
        )


def import_lines(conn: sa.Connection, lines: Iterable[str]) -> dict[str, int]:
    """Into a database with no claims yet (keys are kept: claim:17 stays claim:17)."""
    u, ci, c = User.__table__, Circuit.__table__, Claim.__table__
    if conn.execute(sa.select(sa.func.count()).select_from(c)).scalar_one():
        raise BadInput("this database already holds claims: import into an empty one")
    counts = {"users": 0, "circuits": 0, "claims": 0, "revisions": 0, "reviews": 0}
    ids: dict[str, int] = {row.name: row.id for row in conn.execute(sa.select(u.c.id, u.c.name))}
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            kind = obj["type"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise BadInput(f"line {n} is not a record of {FORMAT}") from None
        if kind == "header":
            if obj.get("format") != FORMAT:
                raise BadInput(f"line {n}: format {obj.get('format')!r}, expected {FORMAT}")
        elif kind == "user":
            if obj["name"] not in ids:
                ids[obj["name"]] = conn.execute(
                    sa.insert(u)
                    .values(
                        name=obj["name"],
                        display_name=obj["display_name"],
                        role=obj["role"],
                        created_at=_dt(obj["created_at"]),
                        disabled_at=_dt(obj["disabled_at"]),
                    )
                    .returning(u.c.id)
                ).scalar_one()
                counts["users"] += 1
        elif kind == "circuit":
            conn.execute(
                sa.insert(ci).values(
                    id=int(obj["key"].split(":")[1]),
                    model_key=obj["model"],
                    name=obj["name"],
                    description=obj["description"],
                    neurons=obj["neurons"],
                    edges=obj["edges"],
                    created_by=ids[obj["created_by"]],
                    created_at=_dt(obj["created_at"]),
                )
            )
            counts["circuits"] += 1
        elif kind == "claim":
            _import_claim(conn, obj, ids, counts)
        else:
            raise BadInput(f"line {n}: unknown record type {kind!r}")
    if conn.dialect.name == "postgresql":
        for table in ("claim", "circuit", "kb_user"):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
            )
    return counts


def _import_claim(conn, obj: dict, ids: dict[str, int], counts: dict) -> None:
    c, r, rv, rh = Claim.__table__, ClaimRevision.__table__, Review.__table__, ReviewRevision.__table__
    claim_id = int(obj["key"].split(":")[1])
    revs = obj["revisions"]
    if not revs:
        raise BadInput(f"{obj['key']} has no revisions")
    last = revs[-1]

    def circuit_id(rev):
        return int(rev["circuit"].split(":")[1]) if rev.get("circuit") else None

    support = sum(1 for x in obj["reviews"] if x["history"] and x["history"][-1]["verdict"] == "SUPPORT")
    dispute = sum(1 for x in obj["reviews"] if x["history"] and x["history"][-1]["verdict"] == "DISPUTE")
    conn.execute(
        sa.insert(c).values(
            id=claim_id,
            revision=last["revision"],
            label=last["label"],
            body=last["body"],
            kind=last["kind"],
            status=last["status"],
            confidence=last["confidence"],
            model_key=obj["model"],
            circuit_id=circuit_id(last),
            origin=obj["origin"],
            created_by=ids[obj["created_by"]],
            created_at=_dt(obj["created_at"]),
            updated_at=_dt(last["created_at"]),
            support_count=support,
            dispute_count=dispute,
        )
    )
    conn.execute(
        sa.insert(r),
        [
            {
                "claim_id": claim_id,
                "revision": x["revision"],
                "author_id": ids[x["author"]],
                "created_at": _dt(x["created_at"]),
                "label": x["label"],
                "body": x["body"],
                "kind": x["kind"],
                "status": x["status"],
                "confidence": x["confidence"],
                "subjects": x["subjects"],
                "circuit_id": circuit_id(x),
                "evidence": x["evidence"],
                "message": x["message"],
            }
            for x in revs
        ],
    )
    _write_subjects(conn, claim_id, last["subjects"])
    for review in obj["reviews"]:
        h = review["history"]
        conn.execute(
            sa.insert(rv).values(
                claim_id=claim_id,
                user_id=ids[review["user"]],
                verdict=h[-1]["verdict"],
                comment=h[-1]["comment"],
                revision=h[-1]["revision"],
                created_at=_dt(review["created_at"]),
                updated_at=_dt(h[-1]["created_at"]),
            )
        )
        conn.execute(
            sa.insert(rh),
            [
                {
                    "claim_id": claim_id,
                    "user_id": ids[review["user"]],
                    "revision": x["revision"],
                    "verdict": x["verdict"],
                    "comment": x["comment"],
                    "created_at": _dt(x["created_at"]),
                }
                for x in h
            ],
        )
        counts["reviews"] += 1
    counts["claims"] += 1
    counts["revisions"] += len(revs)
