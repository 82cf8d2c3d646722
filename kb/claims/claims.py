"""Claims: create, edit and change status with optimistic concurrency; every change an immutable revision.

An edit names the revision it was made against. The check is a conditional UPDATE inside the committing
transaction (``... WHERE id = :id AND revision = :expected``), so of two concurrent edits of the same revision
exactly one commits and the other gets EDIT_CONFLICT with the current revision; the revisions' primary key
(claim, revision) keeps each history linear even against a bug in that logic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, overload

import sqlalchemy as sa

from kb.claims import circuits, revision_rows, textdiff
from kb.claims import content as C
from kb.claims.accounts import Account
from kb.claims.errors import BadInput, EditConflict, Forbidden, NotFound
from kb.claims.ids import is_row_id
from kb.claims.rows import ClaimRevisionRow, ClaimRow
from kb.db.claim_tables import circuit_table, claim_revision_table, claim_subject_table, claim_table
from kb.db.render_tables import artifact_table
from kb.db.tables import utcnow
from kb.graph.keys import Catalog

FIELDS = ("label", "body", "kind", "status", "confidence", "subjects", "circuit_id", "circuit_revision", "evidence")
CONTENT_FIELDS = ("label", "body", "kind", "confidence", "subjects", "circuit_id", "circuit_revision", "evidence")
CLAIM_COLUMNS = ("label", "body", "kind", "status", "confidence", "circuit_id", "circuit_revision")
MODERATED = ("SUPPORTED", "DISPUTED")  # only moderators move a claim to or from these
NeuronTriple = tuple[str, str, int]  # a neuron as claims store it: model key, layer key, index


def may_set_status(actor: Account, is_author: bool, old: str, new: str) -> bool:
    """The moderation rules (README, "Moderation"): a moderator (or admin) may make any change of status; a
    claim's author, an editor, may retract it (PROPOSED -> RETRACTED) and propose it again (RETRACTED ->
    PROPOSED); only moderators move a claim to or from SUPPORTED and DISPUTED; nobody else changes a status."""
    if actor.at_least("moderator"):
        return True
    if not (actor.at_least("editor") and is_author):
        return False
    return old not in MODERATED and new not in MODERATED


def parse_key(key: str) -> int:
    text = (key or "").strip()
    if text.startswith("claim:"):
        text = text[len("claim:") :]
    text = text.split("@", 1)[0]
    if not is_row_id(text):
        raise BadInput(f"{key!r} is not a claim key (claim:17)")
    return int(text)


def parse_revision_key(key: str) -> tuple[int, int | None]:
    text = (key or "").strip()
    revision = None
    if "@" in text:
        text, rev = text.split("@", 1)
        if not is_row_id(rev):
            raise BadInput(f"{key!r} is not a claim revision key (claim:17@3)")
        revision = int(rev)
    return parse_key(text), revision


def _current(conn: sa.Connection, claim_id: int) -> sa.Row[*tuple[Any, ...]]:
    c = claim_table
    row = conn.execute(sa.select(c).where(c.c.id == claim_id)).first()
    if row is None:
        raise NotFound(f"no claim:{claim_id}")
    return row


def _circuit_model(conn: sa.Connection, circuit_id: int | None) -> str | None:
    if circuit_id is None:
        return None
    model_key: str | None = conn.execute(
        sa.select(circuit_table.c.model_key).where(circuit_table.c.id == circuit_id)
    ).scalar()
    if model_key is None:
        raise NotFound(f"no circuit:{circuit_id}")
    return model_key


def _model_key(conn: sa.Connection, subjects: list[str], circuit_id: int | None) -> str:
    models = {s.split("/", 1)[0] for s in subjects}
    circuit_model = _circuit_model(conn, circuit_id)
    if circuit_model:
        models.add(circuit_model)
    if not models:
        raise BadInput("a claim is about one or more neurons or a circuit: give subjects or a circuit")
    if len(models) > 1:
        raise BadInput("a claim's subjects and circuit belong to one model")
    return models.pop()


def write_subjects(conn: sa.Connection, claim_id: int, subjects: list[str]) -> None:
    """Replace the claim's subject rows (what neuron lookups read) with these canonical keys."""
    t = claim_subject_table
    conn.execute(sa.delete(t).where(t.c.claim_id == claim_id))
    rows = []
    for key in subjects:
        model, rest = key.split("/", 1)
        layer, index = rest.rsplit(":", 1)
        rows.append({"claim_id": claim_id, "model_key": model, "layer_key": layer, "neuron_index": int(index)})
    if rows:
        conn.execute(sa.insert(t), rows)


@overload
def parse_circuit_key(key: str) -> int: ...
@overload
def parse_circuit_key(key: None) -> None: ...
def parse_circuit_key(key: str | None) -> int | None:
    """The id of a circuit key (circuit:3, or 3); None for None."""
    if key is None:
        return None
    text = key.strip()
    if text.startswith("circuit:"):
        text = text[len("circuit:") :]
    if not is_row_id(text):
        raise BadInput(f"{key!r} is not a circuit key (circuit:3)")
    return int(text)


def _known_artifacts(conn: sa.Connection, evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evidence, when every visualization it names is an artifact stored here and every experiment it cites
    is here; else BadInput."""
    cited = {int(e["experiment"].split(":")[1]) for e in evidence if e.get("experiment")}
    if cited:
        from kb.db.experiment_tables import experiment_table as x

        known_ids = set(conn.execute(sa.select(x.c.id).where(x.c.id.in_(cited))).scalars())
        for i, e in enumerate(evidence):
            if e.get("experiment") and int(e["experiment"].split(":")[1]) not in known_ids:
                raise NotFound(f"evidence {i + 1}: no {e['experiment']} in this knowledge base")
    wanted = {e["visualization"] for e in evidence if e.get("visualization")}
    if wanted:
        a = artifact_table
        known = set(conn.execute(sa.select(a.c.sha256).where(a.c.sha256.in_(wanted))).scalars())
        for i, e in enumerate(evidence):
            if e.get("visualization") and e["visualization"] not in known:
                raise BadInput(f"evidence {i + 1}: sha256:{e['visualization']} is no artifact of this knowledge base")
    return evidence


def circuit_pin(conn: sa.Connection, key: str | None) -> tuple[int | None, int | None]:
    """What a claim revision is about: circuit:3 pins circuit 3's current revision, circuit:3@2 that revision
    (NOT_FOUND unless it exists); None: no circuit."""
    if key is None:
        return None, None
    circuit_id, revision = circuits.parse_key(key)
    return circuit_id, circuits.pin(conn, circuit_id, revision)


def create_claim(
    conn: sa.Connection,
    catalog: Catalog,
    actor: Account,
    *,
    label: str,
    kind: str,
    body: str = "",
    confidence: float | None = None,
    subjects: list[str] | None = None,
    circuit: str | None = None,
    evidence: list[dict[str, Any]] | None = None,
    message: str = "",
    origin: str | None = None,
    at: datetime | None = None,
) -> int:
    if not actor.at_least("editor"):
        raise Forbidden("creating claims needs the editor role")
    fields: dict[str, Any] = {
        "label": C.label(label),
        "body": C.body(body),
        "kind": C.kind(kind),
        "status": "PROPOSED",
        "confidence": C.confidence(confidence),
        "subjects": C.subjects(catalog, subjects),
        "evidence": _known_artifacts(conn, C.evidence(catalog, evidence)),
    }
    fields["circuit_id"], fields["circuit_revision"] = circuit_pin(conn, circuit)
    model_key = _model_key(conn, fields["subjects"], fields["circuit_id"])
    at = at or utcnow()
    c = claim_table
    claim_id: int = conn.execute(
        sa.insert(c)
        .values(
            revision=1,
            model_key=model_key,
            origin=origin,
            created_by=actor.id,
            created_at=at,
            updated_at=at,
            **{k: fields[k] for k in CLAIM_COLUMNS},
        )
        .returning(c.c.id)
    ).scalar_one()
    conn.execute(
        sa.insert(claim_revision_table).values(
            claim_id=claim_id, revision=1, author_id=actor.id, created_at=at, message=message[:500], **fields
        )
    )
    write_subjects(conn, claim_id, fields["subjects"])
    return claim_id


def _revision_fields(conn: sa.Connection, claim_id: int, revision: int) -> dict[str, Any]:
    r = claim_revision_table
    row = conn.execute(sa.select(r).where(r.c.claim_id == claim_id, r.c.revision == revision)).first()
    if row is None:
        raise NotFound(f"no claim:{claim_id}@{revision}")
    return {k: getattr(row, k) for k in FIELDS}


def _commit(
    conn: sa.Connection, actor: Account, claim_id: int, expected: int, new: dict[str, Any], message: str
) -> int:
    c = claim_table
    at = utcnow()
    done = conn.execute(
        sa.update(c)
        .where(c.c.id == claim_id, c.c.revision == expected)
        .values(
            revision=expected + 1,
            updated_at=at,
            **{k: new[k] for k in CLAIM_COLUMNS},
        )
    ).rowcount
    if not done:
        current = conn.execute(sa.select(c.c.revision).where(c.c.id == claim_id)).scalar()
        raise EditConflict(
            f"claim:{claim_id} is at revision {current}, not {expected}: read it again and re-apply your edit",
            currentRevision=current,
        )
    conn.execute(
        sa.insert(claim_revision_table).values(
            claim_id=claim_id,
            revision=expected + 1,
            author_id=actor.id,
            created_at=at,
            message=(message or "")[:500],
            **new,
        )
    )
    write_subjects(conn, claim_id, new["subjects"])
    return expected + 1


def update_claim(
    conn: sa.Connection,
    catalog: Catalog,
    actor: Account,
    claim_id: int,
    expected_revision: int,
    patch: dict[str, Any],
    message: str = "",
) -> int:
    """Edit content fields (those present in ``patch``); returns the new revision number."""
    row = _current(conn, claim_id)
    if not (actor.at_least("moderator") or (actor.at_least("editor") and row.created_by == actor.id)):
        raise Forbidden(f"only claim:{claim_id}'s author or a moderator may edit its content")
    if row.revision != expected_revision:
        raise EditConflict(
            f"claim:{claim_id} is at revision {row.revision}, not {expected_revision}: "
            f"read it again and re-apply your edit",
            currentRevision=row.revision,
        )
    new = _revision_fields(conn, claim_id, row.revision)
    unknown = set(patch) - (set(CONTENT_FIELDS) - {"circuit_revision"}) - {"circuit"}
    if unknown:
        raise BadInput(f"cannot edit {', '.join(sorted(unknown))} here")
    check: dict[str, Callable[[Any], Any]] = {
        "label": C.label,
        "body": C.body,
        "kind": C.kind,
        "confidence": C.confidence,
    }
    for k, fn in check.items():
        if k in patch:
            new[k] = fn(patch[k])
    if "subjects" in patch:
        new["subjects"] = C.subjects(catalog, patch["subjects"])
    if "evidence" in patch:
        new["evidence"] = _known_artifacts(conn, C.evidence(catalog, patch["evidence"]))
    if "circuit" in patch:  # circuit:N moves the pin to N's current revision, circuit:N@R to that one
        new["circuit_id"], new["circuit_revision"] = circuit_pin(conn, patch["circuit"])
    if _model_key(conn, new["subjects"], new["circuit_id"]) != row.model_key:
        raise BadInput("a claim cannot move to another model")
    if new["status"] in MODERATED and not actor.at_least("moderator"):
        new["status"] = "PROPOSED"  # a moderator's verdict was on the old content: it is to be judged again
    return _commit(conn, actor, claim_id, expected_revision, new, message)


def set_status(
    conn: sa.Connection, actor: Account, claim_id: int, expected_revision: int, status: str, message: str = ""
) -> int:
    row = _current(conn, claim_id)
    status = C.status(status)
    if not may_set_status(actor, row.created_by == actor.id, row.status, status):
        raise Forbidden(
            f"claim:{claim_id} is {row.status}: only a moderator moves a claim to or from SUPPORTED or DISPUTED, "
            "and only its author (or a moderator) retracts or re-proposes it"
        )
    new = _revision_fields(conn, claim_id, row.revision)
    if row.revision != expected_revision:
        raise EditConflict(
            f"claim:{claim_id} is at revision {row.revision}, not {expected_revision}", currentRevision=row.revision
        )
    if new["status"] == status:
        raise BadInput(f"claim:{claim_id} is already {status}")
    new["status"] = status
    return _commit(conn, actor, claim_id, expected_revision, new, message)


def claims_by_id(conn: sa.Connection, claim_ids: Collection[int]) -> dict[int, ClaimRow]:
    """The current rows of these claims, by id, in one statement (absent ids are left out)."""
    if not claim_ids:
        return {}
    c = claim_table
    return {r.id: ClaimRow.of(r._mapping) for r in conn.execute(sa.select(c).where(c.c.id.in_(set(claim_ids))))}


def claims_about_neurons(conn: sa.Connection, keys: list[NeuronTriple]) -> dict[NeuronTriple, list[ClaimRow]]:
    """The claims whose current revision is about each neuron (model key, layer key, index), oldest first."""
    c, s = claim_table, claim_subject_table
    out: dict[NeuronTriple, list[ClaimRow]] = {k: [] for k in keys}
    if not keys:
        return out
    rows = conn.execute(
        sa.select(c, s.c.model_key.label("_m"), s.c.layer_key.label("_l"), s.c.neuron_index.label("_i"))
        .join(s, s.c.claim_id == c.c.id)
        .where(sa.tuple_(s.c.model_key, s.c.layer_key, s.c.neuron_index).in_(keys))
        .order_by(c.c.id)
    )
    for r in rows:
        m = r._mapping
        out[(m["_m"], m["_l"], m["_i"])].append(ClaimRow.of(m))
    return out


def revisions(conn: sa.Connection, claim_ids: Collection[int]) -> dict[int, list[ClaimRevisionRow]]:
    """Every revision of each claim, oldest first, with the author's name."""
    return revision_rows.claim_revisions(conn, claim_ids)


def diff(
    before: ClaimRevisionRow, after: ClaimRevisionRow, check: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Field by field: what changed between two revisions (label and body with a unified diff, bounded: past
    textdiff's bound ``too_large`` is set, ``patch`` is None and ``before``/``after`` hold both versions).
    ``check`` runs between steps of the diff (a request's deadline)."""
    changes = []
    for k in FIELDS:
        a, b = getattr(before, k), getattr(after, k)
        if a == b:
            continue
        change = {"field": k, "before": _text(a), "after": _text(b), "patch": None, "too_large": False}
        if k in ("label", "body"):
            p = textdiff.unified(a or "", b or "", f"@{before.revision}", f"@{after.revision}", check)
            change["patch"], change["too_large"] = p.text, p.too_large
        changes.append(change)
    return changes


def _text(v: object) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)
