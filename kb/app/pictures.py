"""Units' finished renders as readers see them: the kind, the parameters as JSON (keys sorted), and the artifact's
public URL and size. The GraphQL ``visualizations`` fields (kb.schema.picture_types) and the neuron page
(kb.app.neuron_page) show the same; here for many units in one statement."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kb.render import jobs

UnitOf = tuple[str, str, int]  # (model sha256, layer key, unit index): renders belong to weights, not to a model key


def artifact_url(public_url: str, sha256: str) -> str:
    """Where the server serves an artifact (kb.web.artifacts), under its public URL (KB_PUBLIC_URL)."""
    return f"{public_url.rstrip('/')}/artifacts/{sha256}.png"


@dataclass(frozen=True, slots=True)
class Artifact:
    url: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Visualization:
    """A finished render of a unit."""

    kind: str  # kb.render.params' kinds: FEATURE_VIS, NEURON_VIS, DATASET_EXAMPLES, WEIGHTS
    params: str  # JSON, keys sorted
    artifact: Artifact


def visualization(public_url: str, row: dict[str, Any]) -> Visualization:
    """A finished job's row (kb.render.jobs.done_for_units) as a reader sees it."""
    return Visualization(
        kind=row["kind"],
        params=json.dumps(row["params"], sort_keys=True),
        artifact=Artifact(artifact_url(public_url, row["artifact_sha256"]), row["width"], row["height"]),
    )


def of_units(conn: sa.Connection, public_url: str, units: list[UnitOf]) -> dict[UnitOf, list[Visualization]]:
    """Every finished render of each unit, in the order they were asked for (one statement for all)."""
    found = jobs.done_for_units(conn, units)
    return {u: [visualization(public_url, r) for r in rows] for u, rows in found.items()}
