"""Claims, reviews and circuits: one function per use case, each one unit of work (one transaction) that writes the
change, its revision and its activity-feed entry together and returns the row as it then is. The GraphQL
mutations call these; the rules (roles, ownership, statuses, limits, EDIT_CONFLICT) are kb.claims'."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from kb.claims import activity
from kb.claims import circuits as circuit_domain
from kb.claims import claims as claim_domain
from kb.claims import reviews as review_domain
from kb.claims.accounts import Account
from kb.claims.errors import BadInput
from kb.claims.rows import CircuitRow, ClaimRow, ReviewRow
from kb.graph.keys import Catalog


def _claim(conn: sa.Connection, claim_id: int) -> ClaimRow:
    return claim_domain.claims_by_id(conn, [claim_id])[claim_id]


@dataclass(frozen=True)
class ClaimDraft:
    """A new claim's content, as kb.claims.claims.create_claim takes it."""

    label: str
    kind: str
    body: str = ""
    confidence: float | None = None
    subjects: list[str] | None = None
    circuit: str | None = None
    evidence: list[dict[str, Any]] | None = None
    message: str = ""


@dataclass(frozen=True)
class Edit:
    """An edit of a claim or a circuit: its key, the revision it was made against (refused with EDIT_CONFLICT
    unless that is still the current one when the edit commits), what changes, and why."""

    key: str
    expected_revision: int
    patch: dict[str, Any]
    message: str = ""


def create_claim(engine: sa.Engine, catalog: Catalog, actor: Account, draft: ClaimDraft) -> ClaimRow:
    """A new claim (revision 1, PROPOSED) about neurons or a circuit, and its feed entry."""
    with engine.begin() as conn:
        claim_id = claim_domain.create_claim(conn, catalog, actor, **asdict(draft))
        activity.claim_changed(conn, actor, claim_id)
        return _claim(conn, claim_id)


def update_claim(engine: sa.Engine, catalog: Catalog, actor: Account, edit: Edit) -> ClaimRow:
    """A claim's content edited (its author or a moderator), as the revision after ``edit.expected_revision``."""
    with engine.begin() as conn:
        claim_id = claim_domain.parse_key(edit.key)
        claim_domain.update_claim(conn, catalog, actor, claim_id, edit.expected_revision, edit.patch, edit.message)
        activity.claim_changed(conn, actor, claim_id)
        return _claim(conn, claim_id)


def set_claim_status(
    engine: sa.Engine, actor: Account, key: str, expected_revision: int, status: str, message: str = ""
) -> ClaimRow:
    """A claim's status changed: a moderator any, its author to retract or propose again."""
    with engine.begin() as conn:
        claim_id = claim_domain.parse_key(key)
        claim_domain.set_status(conn, actor, claim_id, expected_revision, status, message)
        activity.claim_changed(conn, actor, claim_id)
        return _claim(conn, claim_id)


def review_claim(engine: sa.Engine, actor: Account, key: str, verdict: str, comment: str = "") -> ReviewRow:
    """The actor's review of a claim (one per person, changeable), and its feed entry; returns the review."""
    with engine.begin() as conn:
        claim_id = claim_domain.parse_key(key)
        review_domain.review_claim(conn, actor, claim_id, verdict, comment)
        activity.reviewed(conn, actor, claim_id, verdict)
        return review_domain.review(conn, claim_id, actor.id)


def create_circuit(
    engine: sa.Engine,
    catalog: Catalog,
    actor: Account,
    name: str,
    neurons: list[str],
    edges: list[dict[str, Any]],
    description: str = "",
) -> CircuitRow:
    """A new circuit at revision 1."""
    with engine.begin() as conn:
        circuit_id = circuit_domain.create_circuit(conn, catalog, actor, name, neurons, edges, description)
        return circuit_domain.get(conn, circuit_id)


def update_circuit(engine: sa.Engine, catalog: Catalog, actor: Account, edit: Edit) -> CircuitRow:
    """A circuit edited by any editor, as the revision after ``edit.expected_revision``."""
    circuit_id, at = circuit_domain.parse_key(edit.key)
    if at is not None:
        raise BadInput("edit a circuit by its key (circuit:N), not a revision's")
    with engine.begin() as conn:
        circuit_domain.update_circuit(
            conn, catalog, actor, circuit_id, edit.expected_revision, edit.patch, edit.message
        )
        return circuit_domain.get(conn, circuit_id)
