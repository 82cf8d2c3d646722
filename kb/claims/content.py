"""What a claim says: validated fields, subjects resolved to canonical keys, typed evidence."""

from __future__ import annotations

import re
from typing import Any

from kb.claims.errors import BadInput, NotFound, TooLarge
from kb.claims.ids import row_id
from kb.graph.keys import Catalog, KeyProblem

KINDS = ("FEATURE", "CIRCUIT", "FAMILY", "POLYSEMANTIC", "MECHANISM", "OTHER")
STATUSES = ("PROPOSED", "SUPPORTED", "DISPUTED", "RETRACTED")
# The seven lines of evidence of the Circuits thread ("Zoom In", Olah et al. 2020), plus citations.
EVIDENCE_KINDS = (
    "FEATURE_VISUALIZATION",
    "DATASET_EXAMPLES",
    "SYNTHETIC_EXAMPLES",
    "JOINT_TUNING",
    "FEATURE_IMPLEMENTATION",
    "FEATURE_USE",
    "HANDWRITTEN_CIRCUITS",
    "CITATION",
    "EXPERIMENT",  # a circuit checked by experiment here (kb.experiments): its key, experiment:N
)
EXPERIMENT_KEY = re.compile(r"experiment:([1-9][0-9]{0,9})")
MAX_LABEL = 200
MAX_BODY = 100_000
MAX_SUBJECTS = 500
MAX_EVIDENCE = 100
DOI = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$", re.I)
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.I)
# An evidence picture is an artifact of this knowledge base, named by its sha256 (stored as the 64 hex digits):
# never a URL, which a page would load from anywhere.
ARTIFACT = re.compile(r"(?:sha256:)?([0-9a-f]{64})|/artifacts/([0-9a-f]{64})\.png")


def _neuron(catalog: Catalog, text: str, what: str) -> str:
    try:
        return str(catalog.neuron(text))
    except KeyProblem as exc:
        raise (
            NotFound(f"{what}: {exc}", suggestion=exc.suggestion)
            if exc.code == "NOT_FOUND"
            else BadInput(f"{what}: {exc}")
        ) from None


def label(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise BadInput("label must not be empty")
    if len(value) > MAX_LABEL:
        raise BadInput(f"label is longer than {MAX_LABEL} characters")
    return value


def body(value: str | None) -> str:
    value = value or ""
    if len(value) > MAX_BODY:
        raise TooLarge(f"body is longer than {MAX_BODY} characters")
    return value


def kind(value: str) -> str:
    if value not in KINDS:
        raise BadInput(f"kind must be one of {', '.join(KINDS)}")
    return value


def status(value: str) -> str:
    if value not in STATUSES:
        raise BadInput(f"status must be one of {', '.join(STATUSES)}")
    return value


def confidence(value: float | None) -> float | None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise BadInput("confidence must be between 0 and 1")
    return value


def subjects(catalog: Catalog, keys: list[str] | None) -> list[str]:
    keys = keys or []
    if len(keys) > MAX_SUBJECTS:
        raise BadInput(f"at most {MAX_SUBJECTS} subjects")
    out = list(dict.fromkeys(_neuron(catalog, k, "subject") for k in keys))
    if len({k.split("/", 1)[0] for k in out}) > 1:
        raise BadInput("a claim's subjects belong to one model")
    return out


def artifact_sha(value: str | None) -> str | None:
    """The sha256 an evidence visualization names (sha256:HEX, HEX or /artifacts/HEX.png), or None: anything
    else, a URL included. Old revisions may hold any text; pages show a picture only for what this accepts."""
    m = ARTIFACT.fullmatch((value or "").strip().lower())
    return (m[1] or m[2]) if m else None


def evidence(catalog: Catalog, items: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    items = items or []
    if len(items) > MAX_EVIDENCE:
        raise BadInput(f"at most {MAX_EVIDENCE} evidence items")
    out = []
    for i, item in enumerate(items):
        what = f"evidence {i + 1}"
        k = item.get("kind")
        if k not in EVIDENCE_KINDS:
            raise BadInput(f"{what}: kind must be one of {', '.join(EVIDENCE_KINDS)}")
        clean: dict[str, Any] = {"kind": k, "note": body(item.get("note"))[:5000]}
        if item.get("neuron"):
            clean["neuron"] = _neuron(catalog, item["neuron"], what)
        if item.get("source") or item.get("target"):
            if not (item.get("source") and item.get("target")):
                raise BadInput(f"{what}: an edge needs both source and target")
            clean["source"] = _neuron(catalog, item["source"], what)
            clean["target"] = _neuron(catalog, item["target"], what)
        if item.get("url"):
            if not URL.match(item["url"]) or len(item["url"]) > 2000:
                raise BadInput(f"{what}: url must be an http(s) URL")
            clean["url"] = item["url"]
        if item.get("doi"):
            m = DOI.match(item["doi"].strip())
            if not m:
                raise BadInput(f"{what}: doi must look like 10.1234/abc (optionally doi: or https://doi.org/)")
            clean["doi"] = m[1]
        if item.get("visualization"):
            sha = artifact_sha(str(item["visualization"]))
            if sha is None:
                raise BadInput(
                    f"{what}: visualization is an artifact of this knowledge base: sha256:<its 64 hex digits> "
                    "or /artifacts/<sha256>.png"
                )
            clean["visualization"] = sha
        if item.get("authors") or item.get("title"):
            if k != "CITATION":
                raise BadInput(f"{what}: only a CITATION has authors and a title")
            authors = item.get("authors") or []
            if not isinstance(authors, list) or not all(isinstance(a, str) and a.strip() for a in authors):
                raise BadInput(f"{what}: authors must be a list of names")
            if len(authors) > 100 or any(len(a) > 200 for a in authors) or len(item.get("title") or "") > 500:
                raise BadInput(f"{what}: at most 100 authors of 200 characters, a title of 500")
            if authors:
                clean["authors"] = [a.strip() for a in authors]
            if item.get("title"):
                clean["title"] = str(item["title"]).strip()
        if item.get("experiment"):
            m = EXPERIMENT_KEY.fullmatch(str(item["experiment"]).strip())
            if not m or row_id(m[1]) is None:
                raise BadInput(f"{what}: experiment is an experiment's key: experiment:N")
            clean["experiment"] = f"experiment:{m[1]}"
        if k == "EXPERIMENT" and not clean.get("experiment"):
            raise BadInput(f"{what}: an EXPERIMENT names the experiment it cites (experiment:N)")
        if k == "CITATION" and not (clean.get("doi") or clean.get("url")):
            raise BadInput(f"{what}: a CITATION needs a doi or a url")
        if len(clean) == 2 and not clean["note"]:
            raise BadInput(f"{what}: say what it cites (neuron, edge, url, doi, visualization) or add a note")
        out.append(clean)
    return out
