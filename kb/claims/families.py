"""Neuron families from the literature (Distill's layer_data files) as FAMILY claims.

The files are JavaScript-flavoured JSON (lists may end with a trailing comma); they are read as they are.
Each family becomes one claim: the family's name as label, its comment as body, its units as subjects, the
article as CITATION evidence. A claim's origin (source#layer/name) makes a re-run change nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kb.claims.accounts import Account, ensure_user
from kb.claims.claims import create_claim
from kb.claims.errors import BadInput
from kb.db.claim_tables import claim_table
from kb.graph.keys import Catalog

_TRAILING_COMMA = re.compile(r",(\s*[\]}])")
IMPORT_USER = "families-import"


@dataclass
class FamiliesReport:
    created: int = 0
    unchanged: int = 0
    files: int = 0


def read_families(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(_TRAILING_COMMA.sub(r"\1", text))
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path.name}: cannot read line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list) or not all(isinstance(f, dict) and "name" in f and "units" in f for f in data):
        raise BadInput(f"{path.name}: expected a list of {{name, units, comment}}")
    return data


def import_families(
    conn: sa.Connection,
    catalog: Catalog,
    folder: Path,
    model: str,
    source: str,
    authors: list[str] | None = None,
    title: str | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> FamiliesReport:
    """Each family a FAMILY claim citing ``source`` (its ``authors`` and ``title``): the claim's citation credits
    the source's authors, with the importing account as curator. ``progress(layer, families)``, when given, is
    called per file and returns a tick called per family."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise BadInput(f"no .json files in {folder}")
    catalog.model(model)  # the model must be imported first (raises NotFound / Removed)
    actor = Account(ensure_user(conn, IMPORT_USER, "editor", "Families importer"), IMPORT_USER, "editor")
    doi = source[len("doi:") :] if source.startswith("doi:") else None
    citation: dict[str, Any] = {"kind": "CITATION", "note": f"neuron families from {source}"}
    citation.update({"doi": doi} if doi else {"url": source})
    if authors:
        citation["authors"] = authors
    if title:
        citation["title"] = title
    report = FamiliesReport(files=len(files))
    c = claim_table
    for path in files:
        layer = path.stem
        families = read_families(path)
        tick = progress(layer, len(families)) if progress else None
        for family in families:
            if tick:
                tick(1)
            origin = f"{source}#{layer}/{family['name']}"
            if conn.execute(sa.select(c.c.id).where(c.c.origin == origin)).first():
                report.unchanged += 1
                continue
            units = list(dict.fromkeys(int(u) for u in family["units"]))
            create_claim(
                conn,
                catalog,
                actor,
                label=family["name"],
                kind="FAMILY",
                body=family.get("comment") or "",
                subjects=[f"{model}/{layer}:{u}" for u in units],
                evidence=[citation],
                message=f"imported from {path.name}",
                origin=origin,
            )
            report.created += 1
    return report
