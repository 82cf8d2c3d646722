"""Experiment rows: written when a check's job lands, read by the API, the pages and claim files (no torch)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa

from kb.claims.errors import BadInput, NotFound
from kb.claims.ids import is_row_id
from kb.db.experiment_tables import experiment_table
from kb.db.tables import utcnow

KIND = "CIRCUIT_CHECK"  # the render_job kind of a check (kb.experiments.checks)


def key(experiment_id: int) -> str:
    """The citable key: ``experiment:N``."""
    return f"experiment:{experiment_id}"


def parse_key(text: str) -> int:
    """experiment:7 (or 7) -> 7."""
    raw = (text or "").strip()
    number = raw[len("experiment:") :] if raw.startswith("experiment:") else raw
    if not is_row_id(number):
        raise BadInput(f"{text!r} is not an experiment key (experiment:7)")
    return int(number)


def circuit_of(params: dict[str, Any]) -> tuple[int, int]:
    """(circuit id, revision) of a check's parameters (``circuit: "circuit:N@R"``)."""
    number, _, revision = params["circuit"][len("circuit:") :].partition("@")
    return int(number), int(revision)


def write(conn: sa.Connection, job: dict[str, Any], results: list[dict[str, Any]], versions: dict[str, Any]) -> int:
    """The experiment of a check's job (in the transaction that lands the job); an existing row of the same
    circuit revision and parameters (imported from a claim file) is kept and returned."""
    t = experiment_table
    params = job["params"]
    circuit_id, revision = circuit_of(params)
    found = conn.execute(
        sa.select(t.c.id).where(
            t.c.circuit_id == circuit_id, t.c.circuit_revision == revision, t.c.params_hash == job["params_hash"]
        )
    ).scalar()
    if found is not None:
        return int(found)
    return int(
        conn.execute(
            sa.insert(t)
            .values(
                circuit_id=circuit_id,
                circuit_revision=revision,
                model_key=job["model_key"],
                model_sha256=job["model_sha256"],
                dataset=params["dataset"],
                ablation=params["ablation"],
                params=params,
                params_hash=job["params_hash"],
                results=results,
                versions=versions,
                job_id=job["id"],
                requested_by=job["requested_by"],
                created_at=utcnow(),
            )
            .returning(t.c.id)
        ).scalar_one()
    )


def for_circuits(conn: sa.Connection, circuit_ids: Collection[int]) -> dict[int, list[dict[str, Any]]]:
    """Each circuit's experiments, newest revision first, then newest first."""
    t = experiment_table
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in circuit_ids}
    if not circuit_ids:
        return out
    q = sa.select(t).where(t.c.circuit_id.in_(set(circuit_ids))).order_by(t.c.circuit_revision.desc(), t.c.id.desc())
    for r in conn.execute(q):
        out[r.circuit_id].append(dict(r._mapping))
    return out


def get(conn: sa.Connection, experiment_id: int) -> dict[str, Any]:
    t = experiment_table
    row = conn.execute(sa.select(t).where(t.c.id == experiment_id)).first()
    if row is None:
        raise NotFound(f"no {key(experiment_id)}")
    return dict(row._mapping)


def by_jobs(conn: sa.Connection, job_ids: Collection[int]) -> dict[int, dict[str, Any]]:
    t = experiment_table
    if not job_ids:
        return {}
    return {r.job_id: dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.job_id.in_(set(job_ids))))}


def every(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every experiment, by id (claim files)."""
    t = experiment_table
    return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


def open_checks(conn: sa.Connection, circuit_id: int) -> list[dict[str, Any]]:
    """The circuit's checks QUEUED or RUNNING (any revision), oldest first."""
    from kb.db.render_tables import render_job_table

    t = render_job_table
    q = (
        sa.select(t.c.id, t.c.status, t.c.progress, t.c.params, t.c.requested_by)
        .where(
            t.c.kind == KIND,
            t.c.layer_key.like(f"circuit:{int(circuit_id)}@%"),
            t.c.status.in_(("QUEUED", "RUNNING")),
        )
        .order_by(t.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(q)]
