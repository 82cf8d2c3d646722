"""Writing a validated claim file (``transfer_records.Seen``) in the caller's one transaction, keys and
revision numbers kept: claim:17@3 and circuit:4@2 name the same thing after the move. The current rows
(claim, circuit, claim_subject, review) are each one's last revision, as the live code writes them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kb.claims import edge_lists
from kb.claims.claims import write_subjects
from kb.claims.transfer_records import Seen
from kb.db.annotation_tables import activity_table, circuit_revision_table
from kb.db.claim_tables import (
    circuit_table,
    claim_revision_table,
    claim_table,
    review_revision_table,
    review_table,
    user_table,
)

SEQUENCED = (
    "kb_user",
    "circuit",
    "experiment",
    "claim",
    "activity",
)  # tables whose ids an import sets (PostgreSQL: setval)


def write(conn: sa.Connection, seen: Seen) -> dict[str, int]:
    u = user_table
    counts = dict.fromkeys(
        ("users", "circuits", "circuit revisions", "experiments", "claims", "revisions", "reviews", "activity"), 0
    )
    ids: dict[str, int] = {row.name: row.id for row in conn.execute(sa.select(u.c.id, u.c.name))}
    for name, user in seen.users.items():
        if name not in ids:
            ids[name] = conn.execute(sa.insert(u).values(**user).returning(u.c.id)).scalar_one()
            counts["users"] += 1
    for circuit in seen.circuits.values():
        _circuit(conn, circuit, ids)
        counts["circuits"] += 1
        counts["circuit revisions"] += len(circuit["revisions"])
    for x in seen.experiments.values():  # after the circuits they measured, before the claims that cite them
        from kb.db.experiment_tables import experiment_table

        row = {**x, "requested_by": ids[x["requested_by"]] if x["requested_by"] else None, "job_id": None}
        conn.execute(sa.insert(experiment_table).values(**row))
        counts["experiments"] += 1
    for claim in seen.claims.values():
        _claim(conn, claim, ids)
        counts["claims"] += 1
        counts["revisions"] += len(claim["revisions"])
        counts["reviews"] += len(claim["reviews"])
    if seen.activity:  # in file order, so the feed keeps its order (ids are new)
        rows = [{**a, "actor_id": ids[a["actor"]] if a["actor"] else None} for a in seen.activity]
        conn.execute(sa.insert(activity_table), [{k: v for k, v in r.items() if k != "actor"} for r in rows])
        counts["activity"] = len(rows)
    if conn.dialect.name == "postgresql":
        for table in SEQUENCED:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
            )
    return counts


def _circuit(conn: sa.Connection, circuit: dict[str, Any], ids: dict[str, int]) -> None:
    revs, last = circuit["revisions"], circuit["revisions"][-1]
    conn.execute(
        sa.insert(circuit_table).values(
            id=circuit["id"],
            model_key=circuit["model_key"],
            name=last["name"],
            description=last["description"],
            neurons=last["neurons"],
            edges=last["edges"],
            created_by=ids[circuit["created_by"]],
            created_at=circuit["created_at"],
            revision=last["revision"],
        )
    )
    conn.execute(
        sa.insert(circuit_revision_table),
        [
            {
                **{k: v for k, v in r.items() if k not in ("author", "edges")},
                "edges_sha256": edge_lists.store(conn, r["edges"]),
                "circuit_id": circuit["id"],
                "author_id": ids[r["author"]],
            }
            for r in revs
        ],
    )


def _claim(conn: sa.Connection, claim: dict[str, Any], ids: dict[str, int]) -> None:
    c, r, rv, rh = claim_table, claim_revision_table, review_table, review_revision_table
    claim_id, revs = claim["id"], claim["revisions"]
    last = revs[-1]
    verdicts = [x["history"][-1]["verdict"] for x in claim["reviews"]]
    conn.execute(
        sa.insert(c).values(
            id=claim_id,
            revision=last["revision"],
            label=last["label"],
            body=last["body"],
            kind=last["kind"],
            status=last["status"],
            confidence=last["confidence"],
            model_key=claim["model"],
            circuit_id=last["circuit_id"],
            circuit_revision=last["circuit_revision"],
            origin=claim["origin"],
            created_by=ids[claim["created_by"]],
            created_at=claim["created_at"],
            updated_at=last["created_at"],
            support_count=verdicts.count("SUPPORT"),
            dispute_count=verdicts.count("DISPUTE"),
        )
    )
    conn.execute(
        sa.insert(r),
        [
            {**{k: v for k, v in x.items() if k != "author"}, "claim_id": claim_id, "author_id": ids[x["author"]]}
            for x in revs
        ],
    )
    write_subjects(conn, claim_id, last["subjects"])
    for review in claim["reviews"]:
        h, uid = review["history"], ids[review["user"]]
        conn.execute(
            sa.insert(rv).values(
                claim_id=claim_id,
                user_id=uid,
                verdict=h[-1]["verdict"],
                comment=h[-1]["comment"],
                revision=h[-1]["revision"],
                claim_revision=h[-1]["claim_revision"],
                created_at=review["created_at"],
                updated_at=h[-1]["created_at"],
            )
        )
        conn.execute(sa.insert(rh), [{**x, "claim_id": claim_id, "user_id": uid} for x in h])
