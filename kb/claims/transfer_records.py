"""Validation of each record type of a claim file, in file order: a record may refer only to users in the
database or on an earlier line, and to circuits and claims on earlier lines. Each reader returns nothing and
adds the clean record to ``Seen``; a bad field raises ``Bad``. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kb.claims import activity as feed
from kb.claims import circuits as circuit_rules
from kb.claims import content
from kb.claims.accounts import ROLES
from kb.claims.ids import row_id
from kb.claims.reviews import VERDICTS
from kb.claims.transfer_fields import Bad, date, need, numbered, one_of, subject, text, user_name
from kb.graph.keys import Catalog

EXPORTED_ACTIVITY = tuple(k for k in feed.KINDS if k != "RENDER")  # render jobs are not exported: nor their feed


@dataclass
class Seen:
    """The clean records so far, and the line each key first appeared on (for 'appears twice' errors)."""

    catalog: Catalog
    existing: set[str]  # user names already in the database
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    circuits: dict[int, dict[str, Any]] = field(default_factory=dict)
    claims: dict[int, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[int, dict[str, Any]] = field(default_factory=dict)
    activity: list[dict[str, Any]] = field(default_factory=list)
    origins: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)

    def once(self, key: str, n: int, what: str) -> None:
        if key in self.first:
            raise Bad("key" if what != "user" else "name", f"{key} appears twice (first on line {self.first[key]})")
        self.first[key] = n

    def user(self, obj: dict[str, Any], field: str, where: str = "") -> str:
        name: str = need(obj, field, str, where=where)
        if name not in self.users and name not in self.existing:
            raise Bad(
                where + field, f"no user {name[:64]!r} (neither in the file before this line nor in the database)"
            )
        return name

    def circuit(self, key: str | None, field: str) -> int | None:
        if key is None:
            return None
        circuit_id = numbered(key, "circuit", field)
        if circuit_id not in self.circuits:
            raise Bad(field, f"{key} is not in the file before this line")
        return circuit_id

    def circuit_pin(self, key: str | None, field: str, at: Any) -> tuple[int | None, int | None]:
        """A claim revision's circuit and the revision it pins: circuit:N@R, or circuit:N (files written before
        claims pinned their circuit, format 1 among them) the newest revision made by ``at`` (else 1), as
        migration 0008 pinned existing claims."""
        if key is None:
            return None, None
        base, at_sign, number = key.partition("@")
        circuit_id = self.circuit(base, field)
        assert circuit_id is not None
        revisions = self.circuits[circuit_id]["revisions"]
        if at_sign:
            revision = row_id(number)
            if revision is None or not 1 <= revision <= len(revisions):
                raise Bad(field, f"{key[:64]}: circuit:{circuit_id} has revisions 1..{len(revisions)} in the file")
            return circuit_id, revision
        made = [r["revision"] for r in revisions if r["created_at"] <= at]
        return circuit_id, max(made, default=1)


def user(obj: dict[str, Any], seen: Seen, n: int) -> None:
    name = user_name(need(obj, "name", str), "name")
    seen.once(f"user {name!r}", n, "user")
    seen.users[name] = {
        "name": name,
        "display_name": need(obj, "display_name", str),
        "role": one_of(obj, "role", ROLES),
        "created_at": date(obj, "created_at"),
        "disabled_at": date(obj, "disabled_at", nullable=True),
    }


def _edges(edges: list[Any], catalog: Catalog, model: str, where: str) -> None:
    for i, e in enumerate(edges):
        if not isinstance(e, dict):
            raise Bad(f"{where}edges[{i}]", "expected an object")
        for end in ("source", "target"):
            subject(catalog, need(e, end, str, where=f"{where}edges[{i}]."), model, f"{where}edges[{i}].{end}")
        if "note" in e:
            text(e, "note", circuit_rules.MAX_NOTE, where=f"{where}edges[{i}].")


def _circuit_state(obj: dict[str, Any], catalog: Catalog, model: str, where: str) -> dict[str, Any]:
    """name, description, neurons and edges (kept as stored) of a circuit or of one of its revisions."""
    neurons = need(obj, "neurons", list, where=where)
    for i, key in enumerate(neurons):
        subject(catalog, key, model, f"{where}neurons[{i}]")
    edges = need(obj, "edges", list, where=where)
    _edges(edges, catalog, model, where)
    return {
        "name": text(obj, "name", 200, where=where, nonblank=True),
        "description": text(obj, "description", circuit_rules.MAX_DESCRIPTION, where=where),
        "neurons": neurons,
        "edges": edges,
    }


def circuit(obj: dict[str, Any], seen: Seen, n: int) -> None:
    """Format 2: a circuit with every revision; its row is its last revision."""
    circuit_id = numbered(need(obj, "key", str), "circuit", "key")
    seen.once(f"circuit:{circuit_id}", n, "circuit")
    model = need(obj, "model", str)
    revisions = []
    for i, rev in enumerate(need(obj, "revisions", list)):
        w = f"revisions[{i}]."
        if not isinstance(rev, dict):
            raise Bad(w[:-1], "expected an object")
        number = need(rev, "revision", int, where=w)
        if number != i + 1:
            raise Bad(w + "revision", f"{number}, expected {i + 1}: revisions are 1, 2, 3... without gaps")
        revisions.append(
            {
                "revision": number,
                "author": seen.user(rev, "author", where=w),
                "created_at": date(rev, "created_at", where=w),
                **_circuit_state(rev, seen.catalog, model, w),
                "message": text(rev, "message", 500, where=w),
            }
        )
    if not revisions:
        raise Bad("revisions", "a circuit has at least one revision")
    seen.circuits[circuit_id] = {
        "id": circuit_id,
        "model_key": model,
        "created_by": seen.user(obj, "created_by"),
        "created_at": date(obj, "created_at"),
        "revisions": revisions,
    }


def circuit_v1(obj: dict[str, Any], seen: Seen, n: int) -> None:
    """Format 1 kept a circuit's current state only: it becomes the circuit's revision 1 (as migration 0005
    made every circuit of its time), by its creator, at its creation."""
    circuit_id = numbered(need(obj, "key", str), "circuit", "key")
    seen.once(f"circuit:{circuit_id}", n, "circuit")
    model = need(obj, "model", str)
    state = _circuit_state(obj, seen.catalog, model, "")
    created_by, created_at = seen.user(obj, "created_by"), date(obj, "created_at")
    seen.circuits[circuit_id] = {
        "id": circuit_id,
        "model_key": model,
        "created_by": created_by,
        "created_at": created_at,
        "revisions": [{"revision": 1, "author": created_by, "created_at": created_at, **state, "message": ""}],
    }


def experiment(obj: dict[str, Any], seen: Seen, n: int) -> None:
    """A circuit revision checked by experiment (kb.experiments): after the circuits it measured, before the
    claims whose evidence may cite it. Its figures are kept as measured (results, versions, parameters)."""
    from kb.experiments.figures import ABLATIONS
    from kb.render.params import params_hash

    experiment_id = numbered(need(obj, "key", str), "experiment", "key")
    seen.once(f"experiment:{experiment_id}", n, "experiment")
    pinned = need(obj, "circuit", str)
    number, _, revision = pinned.partition("@")
    circuit_id = seen.circuit(number, "circuit")
    assert circuit_id is not None
    revs = seen.circuits[circuit_id]["revisions"]
    if not revision.isdigit() or not 1 <= int(revision) <= len(revs):
        raise Bad("circuit", f"{pinned!r}: circuit:{circuit_id} has revisions 1..{len(revs)} in the file")
    params = need(obj, "params", dict)
    if params.get("circuit") != pinned:
        raise Bad("params.circuit", f"{str(params.get('circuit'))[:40]!r}, expected {pinned!r}")
    ablation = one_of(obj, "ablation", ABLATIONS)
    dataset = need(obj, "dataset", str)
    if params.get("ablation") != ablation or params.get("dataset") != dataset:
        raise Bad("params", "its ablation and dataset are the record's")
    model = need(obj, "model", str)
    if model != seen.circuits[circuit_id]["model_key"]:
        raise Bad("model", f"{model[:64]!r} is not circuit:{circuit_id}'s model")
    results = need(obj, "results", list)
    if not all(isinstance(r, dict) and isinstance(r.get("target"), str) for r in results):
        raise Bad("results", "each result is an object naming its target")
    requested_by = need(obj, "requested_by", str, nullable=True)
    seen.experiments[experiment_id] = {
        "id": experiment_id,
        "circuit_id": circuit_id,
        "circuit_revision": int(revision),
        "model_key": model,
        "model_sha256": need(obj, "model_sha256", str),
        "dataset": dataset,
        "ablation": ablation,
        "params": params,
        "params_hash": params_hash("CIRCUIT_CHECK", params),
        "results": results,
        "versions": need(obj, "versions", dict),
        "requested_by": seen.user(obj, "requested_by") if requested_by is not None else None,
        "created_at": date(obj, "created_at"),
    }


def claim(obj: dict[str, Any], seen: Seen, n: int) -> None:
    claim_id = numbered(need(obj, "key", str), "claim", "key")
    seen.once(f"claim:{claim_id}", n, "claim")
    model = need(obj, "model", str)
    revs = need(obj, "revisions", list)
    if not revs:
        raise Bad("revisions", "a claim has at least one revision")
    clean = [_claim_revision(rev, i, model, seen) for i, rev in enumerate(revs)]
    reviews, reviewers = [], set()
    for i, review in enumerate(need(obj, "reviews", list)):
        w = f"reviews[{i}]."
        if not isinstance(review, dict):
            raise Bad(w[:-1], "expected an object")
        reviewer = seen.user(review, "user", where=w)
        if reviewer in reviewers:
            raise Bad(w + "user", f"{reviewer!r} reviews this claim twice")
        reviewers.add(reviewer)
        history = need(review, "history", list, where=w)
        if not history:
            raise Bad(w + "history", "a review has at least one verdict")
        steps = [_verdict(h, j, len(clean), w) for j, h in enumerate(history)]
        reviews.append({"user": reviewer, "created_at": date(review, "created_at", where=w), "history": steps})
    origin = need(obj, "origin", str, nullable=True)
    if origin is not None and origin in seen.origins:
        raise Bad("origin", f"also the origin of claim:{seen.origins[origin]}")
    if origin is not None:
        seen.origins[origin] = claim_id
    seen.claims[claim_id] = {
        "id": claim_id,
        "model": model,
        "origin": origin,
        "created_by": seen.user(obj, "created_by"),
        "created_at": date(obj, "created_at"),
        "revisions": clean,
        "reviews": reviews,
    }


def _claim_revision(rev: Any, i: int, model: str, seen: Seen) -> dict[str, Any]:
    w = f"revisions[{i}]."
    if not isinstance(rev, dict):
        raise Bad(w[:-1], "expected an object")
    number = need(rev, "revision", int, where=w)
    if number != i + 1:
        raise Bad(w + "revision", f"{number}, expected {i + 1}: revisions are 1, 2, 3... without gaps")
    label = text(rev, "label", content.MAX_LABEL, where=w, nonblank=True)
    confidence = need(rev, "confidence", (int, float), nullable=True, where=w)
    if confidence is not None and not 0 <= confidence <= 1:
        raise Bad(w + "confidence", f"{confidence} is not between 0 and 1")
    subjects = need(rev, "subjects", list, where=w)
    for j, key in enumerate(subjects):
        subject(seen.catalog, key, model, f"{w}subjects[{j}]")
    evidence = need(rev, "evidence", list, where=w)
    for j, item in enumerate(evidence):
        if not isinstance(item, dict):
            raise Bad(f"{w}evidence[{j}]", "expected an object")
        one_of(item, "kind", content.EVIDENCE_KINDS, where=f"{w}evidence[{j}].")
        if item.get("experiment") is not None:
            cited = numbered(need(item, "experiment", str, where=f"{w}evidence[{j}]."), "experiment", "experiment")
            if cited not in seen.experiments:
                raise Bad(f"{w}evidence[{j}].experiment", f"experiment:{cited} is not in the file before this line")
    created_at = date(rev, "created_at", where=w)
    circuit_id, circuit_revision = seen.circuit_pin(
        need(rev, "circuit", str, nullable=True, where=w), w + "circuit", created_at
    )
    if not subjects and circuit_id is None:
        raise Bad(w + "subjects", "a revision is about neurons or a circuit: neither is given")
    return {
        "revision": number,
        "author": seen.user(rev, "author", where=w),
        "created_at": created_at,
        "label": label,
        "body": need(rev, "body", str, where=w),
        "kind": one_of(rev, "kind", content.KINDS, where=w),
        "status": one_of(rev, "status", content.STATUSES, where=w),
        "confidence": confidence,
        "subjects": subjects,
        "evidence": evidence,
        "circuit_id": circuit_id,
        "circuit_revision": circuit_revision,
        "message": need(rev, "message", str, where=w),
    }


def _verdict(h: Any, j: int, revisions: int, where: str) -> dict[str, Any]:
    hw = f"{where}history[{j}]."
    if not isinstance(h, dict):
        raise Bad(hw[:-1], "expected an object")
    number = need(h, "revision", int, where=hw)
    if number != j + 1:
        raise Bad(hw + "revision", f"{number}, expected {j + 1}: without gaps")
    judged = need(h, "claim_revision", int, nullable=True, where=hw) if "claim_revision" in h else None
    if judged is not None and not 1 <= judged <= revisions:
        raise Bad(hw + "claim_revision", f"{judged}: the claim has revisions 1..{revisions}")
    return {
        "revision": number,
        "verdict": one_of(h, "verdict", VERDICTS, where=hw),
        "comment": need(h, "comment", str, where=hw),
        "claim_revision": judged,
        "created_at": date(h, "created_at", where=hw),
    }


def activity(obj: dict[str, Any], seen: Seen, n: int) -> None:
    """One line of the feed, about a claim or circuit on an earlier line; written in file order."""
    model = need(obj, "model", str)
    neurons = need(obj, "neurons", list)
    for i, key in enumerate(neurons):
        subject(seen.catalog, key, model, f"neurons[{i}]")
    claim_key = need(obj, "claim", str, nullable=True)
    claim_id = numbered(claim_key, "claim", "claim") if claim_key is not None else None
    if claim_id is not None and claim_id not in seen.claims:
        raise Bad("claim", f"{claim_key} is not in the file before this line")
    actor = need(obj, "actor", str, nullable=True)
    seen.activity.append(
        {
            "at": date(obj, "at"),
            "kind": one_of(obj, "kind", EXPORTED_ACTIVITY),
            "model_key": model,
            "subject": text(obj, "subject", 120, nonblank=True),
            "summary": text(obj, "summary", 300),
            "actor": seen.user(obj, "actor") if actor is not None else None,
            "neurons": neurons,
            "claim_id": claim_id,
            "circuit_id": seen.circuit(need(obj, "circuit", str, nullable=True), "circuit"),
        }
    )
