"""Export and import of the claim layer as JSON Lines: users, circuits, claims with every revision, reviews
with their history. Deterministic (sorted, one record a line), so export → import into an empty database →
export gives the same file. Tokens are never exported.

The last line is a trailer: the count of each record type and the sha256 of every line before it. Import
refuses a file without a valid trailer (a truncated or edited file), then validates every record before it
writes anything (kinds, statuses, roles, gapless revisions, users that exist, subjects that resolve, dates),
then writes it all in the caller's one transaction. Each refusal is one line naming the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from kb.claims import content
from kb.claims.accounts import NAME, ROLES
from kb.claims.claims import write_subjects
from kb.claims.errors import BadInput
from kb.claims.reviews import VERDICTS
from kb.db.catalog import load_catalog
from kb.db.claim_tables import (
    circuit_table,
    claim_revision_table,
    claim_table,
    review_revision_table,
    review_table,
    user_table,
)
from kb.graph.keys import Catalog, KeyProblem

FORMAT = "circuit-kb/claims@1"
Types = type | tuple[type, ...]  # what _need accepts: one type or several


def _ts(v: datetime | None) -> str | None:
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat()


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def export_lines(conn: sa.Connection) -> Iterator[str]:
    """Every record, then the trailer (counts and the sha256 of the lines before it)."""
    digest, counts = hashlib.sha256(), {"user": 0, "circuit": 0, "claim": 0}
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
    u, ci, c, r = user_table, circuit_table, claim_table, claim_revision_table
    rv, rh = review_table, review_revision_table
    names = {row.id: row.name for row in conn.execute(sa.select(u.c.id, u.c.name))}

    line = _line
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
    revs: dict[int, list[Any]] = {}
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
    history: dict[tuple[int, int], list[Any]] = {}
    for row in conn.execute(sa.select(rh).order_by(rh.c.claim_id, rh.c.user_id, rh.c.revision)):
        history.setdefault((row.claim_id, row.user_id), []).append(
            {
                "revision": row.revision,
                "verdict": row.verdict,
                "comment": row.comment,
                "claim_revision": row.claim_revision,
                "created_at": _ts(row.created_at),
            }
        )
    reviews: dict[int, list[Any]] = {}
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


class _Bad(Exception):
    def __init__(self, field: str, message: str):
        self.field, self.message = field, message


def _need(obj: dict[str, Any], field: str, types: Types, *, nullable: bool = False, where: str = "") -> Any:
    """The field's value if it has one of these types (or is null, when allowed); _Bad otherwise."""
    name = where + field
    if field not in obj:
        raise _Bad(name, "missing")
    value = obj[field]
    if value is None and nullable:
        return None
    if not isinstance(value, types) or (
        isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    ):
        raise _Bad(name, f"expected {_type_name(types)}, got {json.dumps(value)[:60]}")
    return value


def _type_name(types: Types) -> str:
    names: dict[type, str] = {
        str: "text",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "true/false",
    }
    return " or ".join(names.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def _date(obj: dict[str, Any], field: str, *, nullable: bool = False, where: str = "") -> datetime | None:
    text = _need(obj, field, str, nullable=nullable, where=where)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(where + field, f"{text[:40]!r} is not an ISO 8601 date") from None
    if value.tzinfo is None:
        raise _Bad(where + field, f"{text[:40]!r} has no time zone")
    return value


def _one_of(obj: dict[str, Any], field: str, allowed: Iterable[str], where: str = "") -> str:
    value: str = _need(obj, field, str, where=where)
    if value not in allowed:
        raise _Bad(where + field, f"{value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def _numbered(key: str, prefix: str, field: str) -> int:
    m = re.fullmatch(prefix + r":([1-9][0-9]{0,17})", key)
    if not m:
        raise _Bad(field, f"{key[:40]!r} is not a key like {prefix}:17")
    return int(m[1])


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
    records, counts = [], {"user": 0, "circuit": 0, "claim": 0}
    for n, text in texts[:-1]:
        digest.update(text.rstrip("\r\n").encode("utf-8") + b"\n")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"line {n}: not JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise BadInput(f"line {n}: type: missing (a record is an object with a type)")
        if obj["type"] in counts:
            counts[obj["type"]] += 1
        records.append((n, obj))
    if trailer.get("sha256") != digest.hexdigest():
        raise BadInput(f"line {n_last}: sha256: the lines before the trailer do not match it (truncated or edited)")
    if trailer.get("counts") != counts:
        raise BadInput(f"line {n_last}: counts: the trailer says {trailer.get('counts')}, the file holds {counts}")
    return records


def import_lines(conn: sa.Connection, lines: Iterable[str | bytes]) -> dict[str, int]:
    """Into a database with no claims yet (keys are kept: claim:17 stays claim:17). Nothing is written unless
    every record is valid; the caller's transaction makes the writes all or nothing."""
    records = read_file(lines)
    u, c = user_table, claim_table
    if conn.execute(sa.select(sa.func.count()).select_from(c)).scalar_one():
        raise BadInput("this database already holds claims: import into an empty one")
    existing = {row.name for row in conn.execute(sa.select(u.c.name))}
    plan = _validate(conn, records, existing)
    return _write(conn, plan)


def _validate(conn: sa.Connection, records: list[tuple[int, dict[str, Any]]], existing: set[str]) -> dict[str, Any]:
    catalog = load_catalog(conn)
    users: dict[str, dict[str, Any]] = {}
    circuits: dict[int, dict[str, Any]] = {}
    claims: dict[int, dict[str, Any]] = {}
    origins: dict[str, int] = {}
    first: dict[str, int] = {}
    header_seen = False
    for n, obj in records:
        try:
            kind = obj["type"]
            if kind == "header":
                if header_seen or n != records[0][0]:
                    raise _Bad("type", "the header comes once, first")
                header_seen = True
                if obj.get("format") != FORMAT:
                    raise _Bad("format", f"{obj.get('format')!r}, expected {FORMAT}")
                continue
            if not header_seen:
                raise _Bad("type", f"the first record must be the {FORMAT} header")
            if kind == "user":
                name = _need(obj, "name", str)
                if not NAME.match(name):
                    raise _Bad("name", f"{name[:40]!r} is not a valid user name")
                if name in users:
                    raise _Bad("name", f"user {name!r} appears twice (first on line {first['u' + name]})")
                first["u" + name] = n
                users[name] = {
                    "name": name,
                    "display_name": _need(obj, "display_name", str),
                    "role": _one_of(obj, "role", ROLES),
                    "created_at": _date(obj, "created_at"),
                    "disabled_at": _date(obj, "disabled_at", nullable=True),
                }
            elif kind == "circuit":
                cid = _numbered(_need(obj, "key", str), "circuit", "key")
                if cid in circuits:
                    raise _Bad("key", f"circuit:{cid} appears twice (first on line {first['c' + str(cid)]})")
                first["c" + str(cid)] = n
                model = _need(obj, "model", str)
                neurons = _need(obj, "neurons", list)
                edges = _need(obj, "edges", list)
                for i, key in enumerate(neurons):
                    _subject(catalog, key, model, f"neurons[{i}]")
                for i, e in enumerate(edges):
                    if not isinstance(e, dict):
                        raise _Bad(f"edges[{i}]", "expected an object")
                    for end in ("source", "target"):
                        _subject(catalog, _need(e, end, str, where=f"edges[{i}]."), model, f"edges[{i}].{end}")
                circuits[cid] = {
                    "id": cid,
                    "model_key": model,
                    "name": _need(obj, "name", str),
                    "description": _need(obj, "description", str),
                    "neurons": neurons,
                    "edges": edges,
                    "created_by": _user(obj, "created_by", users, existing),
                    "created_at": _date(obj, "created_at"),
                }
            elif kind == "claim":
                claim = _claim(obj, catalog, users, existing, circuits)
                if claim["id"] in claims:
                    raise _Bad(
                        "key", f"claim:{claim['id']} appears twice (first on line {first['k' + str(claim['id'])]})"
                    )
                if claim["origin"] is not None and claim["origin"] in origins:
                    raise _Bad("origin", f"also the origin of claim:{origins[claim['origin']]}")
                first["k" + str(claim["id"])] = n
                if claim["origin"] is not None:
                    origins[claim["origin"]] = claim["id"]
                claims[claim["id"]] = claim
            else:
                raise _Bad("type", f"unknown record type {kind!r}")
        except _Bad as bad:
            raise BadInput(f"line {n}: {bad.field}: {bad.message}") from None
    if not header_seen:
        raise BadInput(f"line 1: type: the first record must be the {FORMAT} header")
    return {"users": users, "circuits": circuits, "claims": claims, "existing": existing}


def _user(obj: dict[str, Any], field: str, users: dict[str, Any], existing: set[str], where: str = "") -> str:
    name: str = _need(obj, field, str, where=where)
    if name not in users and name not in existing:
        raise _Bad(where + field, f"no user {name[:64]!r} (neither in the file before this line nor in the database)")
    return name


def _subject(catalog: Catalog, key: object, model: str, field: str) -> str:
    if not isinstance(key, str):
        raise _Bad(field, "expected a neuron key")
    m = re.fullmatch(r"([^/\s]+)/([^:\s]+):([0-9]+)", key)
    if not m:
        raise _Bad(field, f"{key[:60]!r} is not a canonical neuron key (model/layer:index)")
    if m[1] != model:
        raise _Bad(field, f"{key[:60]!r} is not of the claim's model {model!r}")
    known = catalog.models.get(model.lower())
    if known is not None and not known.removed:  # another database's model, or a removed one: the key is kept
        try:
            if str(catalog.neuron(key)) != key:
                raise _Bad(field, f"{key[:60]!r} is not the canonical form")
        except KeyProblem as exc:
            raise _Bad(field, str(exc)) from None
    return key


def _claim(
    obj: dict[str, Any],
    catalog: Catalog,
    users: dict[str, Any],
    existing: set[str],
    circuits: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    claim_id = _numbered(_need(obj, "key", str), "claim", "key")
    model = _need(obj, "model", str)
    revs = _need(obj, "revisions", list)
    if not revs:
        raise _Bad("revisions", "a claim has at least one revision")
    clean = []
    for i, rev in enumerate(revs):
        w = f"revisions[{i}]."
        if not isinstance(rev, dict):
            raise _Bad(w[:-1], "expected an object")
        number = _need(rev, "revision", int, where=w)
        if number != i + 1:
            raise _Bad(w + "revision", f"{number}, expected {i + 1}: revisions are 1, 2, 3... without gaps")
        label = _need(rev, "label", str, where=w)
        if not label.strip() or len(label) > content.MAX_LABEL:
            raise _Bad(w + "label", f"empty or longer than {content.MAX_LABEL} characters")
        confidence = _need(rev, "confidence", (int, float), nullable=True, where=w)
        if confidence is not None and not 0 <= confidence <= 1:
            raise _Bad(w + "confidence", f"{confidence} is not between 0 and 1")
        subjects = _need(rev, "subjects", list, where=w)
        for j, key in enumerate(subjects):
            _subject(catalog, key, model, f"{w}subjects[{j}]")
        evidence = _need(rev, "evidence", list, where=w)
        for j, item in enumerate(evidence):
            if not isinstance(item, dict):
                raise _Bad(f"{w}evidence[{j}]", "expected an object")
            _one_of(item, "kind", content.EVIDENCE_KINDS, where=f"{w}evidence[{j}].")
        circuit = _need(rev, "circuit", str, nullable=True, where=w)
        circuit_id = None
        if circuit is not None:
            circuit_id = _numbered(circuit, "circuit", w + "circuit")
            if circuit_id not in circuits:
                raise _Bad(w + "circuit", f"{circuit} is not in the file before this line")
        if not subjects and circuit_id is None:
            raise _Bad(w + "subjects", "a revision is about neurons or a circuit: neither is given")
        clean.append(
            {
                "revision": number,
                "author": _user(rev, "author", users, existing, where=w),
                "created_at": _date(rev, "created_at", where=w),
                "label": label,
                "body": _need(rev, "body", str, where=w),
                "kind": _one_of(rev, "kind", content.KINDS, where=w),
                "status": _one_of(rev, "status", content.STATUSES, where=w),
                "confidence": confidence,
                "subjects": subjects,
                "evidence": evidence,
                "circuit_id": circuit_id,
                "message": _need(rev, "message", str, where=w),
            }
        )
    reviews, seen = [], set()
    for i, review in enumerate(_need(obj, "reviews", list)):
        w = f"reviews[{i}]."
        if not isinstance(review, dict):
            raise _Bad(w[:-1], "expected an object")
        user = _user(review, "user", users, existing, where=w)
        if user in seen:
            raise _Bad(w + "user", f"{user!r} reviews this claim twice")
        seen.add(user)
        history = _need(review, "history", list, where=w)
        if not history:
            raise _Bad(w + "history", "a review has at least one verdict")
        steps = []
        for j, h in enumerate(history):
            hw = f"{w}history[{j}]."
            if not isinstance(h, dict):
                raise _Bad(hw[:-1], "expected an object")
            number = _need(h, "revision", int, where=hw)
            if number != j + 1:
                raise _Bad(hw + "revision", f"{number}, expected {j + 1}: without gaps")
            judged = _need(h, "claim_revision", int, nullable=True, where=hw) if "claim_revision" in h else None
            if judged is not None and not 1 <= judged <= len(clean):
                raise _Bad(hw + "claim_revision", f"{judged}: the claim has revisions 1..{len(clean)}")
            steps.append(
                {
                    "revision": number,
                    "verdict": _one_of(h, "verdict", VERDICTS, where=hw),
                    "comment": _need(h, "comment", str, where=hw),
                    "claim_revision": judged,
                    "created_at": _date(h, "created_at", where=hw),
                }
            )
        reviews.append({"user": user, "created_at": _date(review, "created_at", where=w), "history": steps})
    return {
        "id": claim_id,
        "model": model,
        "origin": _need(obj, "origin", str, nullable=True),
        "created_by": _user(obj, "created_by", users, existing),
        "created_at": _date(obj, "created_at"),
        "revisions": clean,
        "reviews": reviews,
    }


def _write(conn: sa.Connection, plan: dict[str, Any]) -> dict[str, int]:
    u, ci = user_table, circuit_table
    counts = {"users": 0, "circuits": 0, "claims": 0, "revisions": 0, "reviews": 0}
    ids: dict[str, int] = {row.name: row.id for row in conn.execute(sa.select(u.c.id, u.c.name))}
    for name, user in plan["users"].items():
        if name not in ids:
            ids[name] = conn.execute(sa.insert(u).values(**user).returning(u.c.id)).scalar_one()
            counts["users"] += 1
    for circuit in plan["circuits"].values():
        conn.execute(sa.insert(ci).values(**{**circuit, "created_by": ids[circuit["created_by"]]}))
        counts["circuits"] += 1
    for claim in plan["claims"].values():
        _import_claim(conn, claim, ids, counts)
    if conn.dialect.name == "postgresql":
        for table in ("claim", "circuit", "kb_user"):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT max(id) FROM {table}), 1))"
            )
    return counts


def _import_claim(conn: sa.Connection, claim: dict[str, Any], ids: dict[str, int], counts: dict[str, Any]) -> None:
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
        [{**x, "claim_id": claim_id, "author_id": ids[x["author"]]} for x in revs],
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
        counts["reviews"] += 1
    counts["claims"] += 1
    counts["revisions"] += len(revs)
