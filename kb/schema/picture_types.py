"""GraphQL types of finished renders: the pictures of a unit or of a whole layer, their artifacts and kinds.

They refer to no node: the graph's types (kb.schema.types) list them, render jobs (kb.schema.render_types) make them.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Any

import strawberry

from kb.app.pictures import artifact_url
from kb.experiments.store import KIND as CHECK
from kb.graph.keys import NeuronKey
from kb.graph.store import ModelGraph
from kb.render import jobs as job_domain
from kb.render.params import ALL_KINDS, LAYER_KINDS
from kb.schema.context import Info

# enums built from kb.render.params' kinds at run time (what strawberry reads); mypy sees classes of no members
if TYPE_CHECKING:

    class RenderKind(Enum): ...

    class LayerRenderKind(Enum): ...
else:
    RenderKind = strawberry.enum(
        Enum("RenderKind", {k: k for k in (*ALL_KINDS, CHECK)}),
        description="FEATURE_VIS: channel objective; NEURON_VIS: centre position; DATASET_EXAMPLES: top-k images "
        "of a dataset, cropped at the maximum; WEIGHTS: the strongest input kernels. A whole layer's pictures "
        "(requestLayerRender): DEEPDREAM, CARICATURE. CIRCUIT_CHECK: a circuit checked by experiment (checkCircuit), "
        "whose result is an experiment, not a picture",
    )

    LayerRenderKind = strawberry.enum(
        Enum("LayerRenderKind", {k: k for k in LAYER_KINDS}),
        description="a picture of a whole layer: DEEPDREAM maximises the layer's mean squared activation (every "
        "channel, every position); CARICATURE (params.dataset and params.image, or params.upload) makes an image "
        "whose activations at the layer point the way the target image's do (their dot product weighted by their "
        "cosine), as Microscope does",
    )


@strawberry.type
class Artifact:
    sha256: str
    url: str
    width: int
    height: int
    versions: str = strawberry.field(
        description="what made it (JSON): torch, torchvision, lucent and "
        "circuit-kb versions, the device type, bf16 or not"
    )


def _artifact(info: Info, sha: str, width: int, height: int, versions: dict[str, Any]) -> Artifact:
    return Artifact(
        sha256=sha,
        url=artifact_url(info.context.settings.public_url, sha),
        width=width,
        height=height,
        versions=json.dumps(versions, sort_keys=True),
    )


@strawberry.type(description="A finished render of a neuron.")
class Visualization:
    kind: RenderKind
    params: str
    artifact: Artifact


async def visualizations(info: Info, g: ModelGraph, key: NeuronKey, kind: RenderKind | None) -> list[Visualization]:
    """A unit's finished renders (of the weights of ``g``), of one kind or all."""
    rows = await info.context.loaders.visualizations.load((g.sha256, key.layer, key.index))
    return [
        Visualization(
            kind=RenderKind[r["kind"]],
            params=json.dumps(r["params"], sort_keys=True),
            artifact=_artifact(info, r["artifact_sha256"], r["width"], r["height"], r["versions"]),
        )
        for r in rows
        if kind is None or r["kind"] == kind.value
    ]


@strawberry.type(description="A finished render of one unit of a layer.")
class UnitVisualization:
    index: int = strawberry.field(description="the unit's index in the layer")
    kind: RenderKind
    params: str
    artifact: Artifact


def layer_visualizations(info: Info, g: ModelGraph, position: int, kind: RenderKind | None) -> list[UnitVisualization]:
    name = g.layers[position].key
    with info.context.engine.connect() as conn:
        rows = job_domain.done_for_layer(conn, g.sha256, name, kind.value if kind else None)
    return [
        UnitVisualization(
            index=r["unit"],
            kind=RenderKind[r["kind"]],
            params=json.dumps(r["params"], sort_keys=True),
            artifact=_artifact(info, r["artifact_sha256"], r["width"], r["height"], r["versions"]),
        )
        for r in rows
    ]


@strawberry.type(description="A finished picture of a whole layer: its deep dream or a caricature.")
class LayerView:
    kind: LayerRenderKind
    params: str = strawberry.field(description="JSON")
    dataset: str | None = strawberry.field(description="CARICATURE: the dataset of its target image")
    image: int | None = strawberry.field(description="CARICATURE: the target image's index in the dataset")
    upload: str | None = strawberry.field(description="CARICATURE of an uploaded image: that image's sha256")
    source: Artifact | None = strawberry.field(
        description="CARICATURE of an uploaded image: that image (as stored: re-encoded as PNG)"
    )
    artifact: Artifact


def layer_views(info: Info, g: ModelGraph, position: int, kind: LayerRenderKind | None) -> list[LayerView]:
    name = g.layers[position].key
    with info.context.engine.connect() as conn:
        rows = job_domain.layer_views(conn, g.sha256, name, kind.value if kind else None)
        sources = job_domain.uploads(conn, [r["params"]["upload"] for r in rows if r["params"].get("upload")])
    out = []
    for r in rows:
        up = sources.get(r["params"].get("upload") or "")
        out.append(
            LayerView(
                kind=LayerRenderKind[r["kind"]],
                params=json.dumps(r["params"], sort_keys=True),
                dataset=r["params"].get("dataset"),
                image=r["params"].get("image"),
                upload=r["params"].get("upload"),
                source=_artifact(info, up["sha256"], up["width"], up["height"], up["versions"]) if up else None,
                artifact=_artifact(info, r["artifact_sha256"], r["width"], r["height"], r["versions"]),
            )
        )
    return out
