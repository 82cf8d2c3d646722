"""GraphQL of the render layer: request renders, follow jobs, find a neuron's images."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from kb.experiments.store import KIND as CHECK
from kb.graph.keys import KeyProblem
from kb.render import jobs as job_domain
from kb.render.lanes import LANES
from kb.render.params import ALL_KINDS, LAYER_KINDS, RenderParams
from kb.render.quota import Quota
from kb.render.requests import cancel_renders, layer_unit, request_layer_render, request_renders
from kb.schema.auth import mutation
from kb.schema.claim_types import Person, _person
from kb.schema.context import Info
from kb.schema.errors import CodedError, bad_input, limit
from kb.schema.types import Neuron

if TYPE_CHECKING:
    from kb.schema.experiment_types import Experiment

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
RenderLane = strawberry.enum(
    Enum("RenderLane", {lane.upper(): lane for lane in LANES}),
    description="which work a worker takes first: INTERACTIVE (a few units asked for by a person), then VIEW "
    "(thumbnails pages ask for), then BULK (a layer or a model; accounts take turns). A running bulk render "
    "yields between its device batches",
)
MAX_UNITS = 1024


@strawberry.input(description="Feature-visualisation parameters (lucent's defaults).")
class RenderParamsInput:
    size: int = 128
    steps: int = 512
    seed: int = 0
    parameterization: str = "fft"
    transforms: str = "standard"
    negative: bool = False
    lr: float = 0.05
    upsample: int = 224
    dataset: str = strawberry.field(default="", description="DATASET_EXAMPLES: a dataset name")
    top_k: int = strawberry.field(default=9, description="DATASET_EXAMPLES: examples per unit")
    image: int = strawberry.field(
        default=-1, description="CARICATURE: the index of the dataset's image (its files in sorted order)"
    )
    upload: str = strawberry.field(
        default="",
        description="CARICATURE: instead of a dataset's image, the sha256 of an image an editor uploaded "
        "(POST /uploads, the layer page's form or kb render --image-file answer it)",
    )
    batch: int | None = strawberry.field(
        default=None,
        description="units sent to a worker in one task "
        "(default: KB_RENDER_BATCH); the worker "
        "optimises them in batches its device fits; "
        "not part of the image's identity",
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


@strawberry.type(description="One unit's render: a row that says what is asked, how far it is, what it made.")
class RenderJob:
    id: int
    kind: RenderKind
    status: str = strawberry.field(
        description="QUEUED, RUNNING, DONE, FAILED or CANCELLED (cancelRenders: no artifact)"
    )
    lane: RenderLane  # type: ignore[valid-type]
    attempts: int
    progress: float
    error: str | None
    params: str = strawberry.field(description="JSON")
    created_at: datetime
    finished_at: datetime | None
    _row: strawberry.Private[dict]

    @classmethod
    def of(cls, row: dict) -> RenderJob:
        return cls(
            id=row["id"],
            kind=RenderKind[row["kind"]],
            status=row["status"],
            lane=RenderLane[row["lane"].upper()],
            attempts=row["attempts"],
            progress=row["progress"],
            error=row["error"],
            params=json.dumps(row["params"], sort_keys=True),
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            _row=row,
        )

    @strawberry.field(description="the layer's key (model/layer): of the unit's layer, or of a whole layer's picture")
    def layer(self) -> str:
        return f"{self._row['model_key']}/{self._row['layer_key']}"

    @strawberry.field(description="the unit rendered; null for a picture of a whole layer (DEEPDREAM, CARICATURE)")
    def neuron(self, info: Info) -> Neuron | None:
        r = self._row
        if r["unit"] == job_domain.LAYER_UNIT:
            return None
        try:
            key = info.context.graphs.resolve(f"{r['model_key']}/{r['layer_key']}:{r['unit']}")
            return Neuron.of_key(info.context.graphs.graph(key.model), key)
        except (KeyProblem, LookupError):
            return None

    @strawberry.field(
        description="the account whose request queued it (after a FAILED end, the last to ask again); null for "
        "the operator's CLI. Moderators and admins only: FORBIDDEN for anyone else"
    )
    async def requested_by(self, info: Info) -> Person | None:
        account = info.context.account()
        if not account.at_least("moderator"):
            raise CodedError(
                f"who asked for a render is shown to moderators; {account.name} is {account.role}", "FORBIDDEN"
            )
        user_id = self._row["requested_by"]
        return await _person(info, user_id) if user_id is not None else None

    @strawberry.field(description="CIRCUIT_CHECK: the experiment it measured, once DONE")
    def experiment(self, info: Info) -> Annotated[Experiment, strawberry.lazy("kb.schema.experiment_types")] | None:
        if self._row["kind"] != CHECK or self._row["status"] != "DONE":
            return None
        from kb.schema.experiment_types import experiment_of_job

        return experiment_of_job(info, self._row["id"])

    @strawberry.field
    async def artifact(self, info: Info) -> Artifact | None:
        if not self._row["artifact_id"]:
            return None
        a = await info.context.loaders.artifact.load(self._row["artifact_id"])
        return _artifact(info, a["sha256"], a["width"], a["height"], a["versions"])


def _artifact(info: Info, sha: str, width: int, height: int, versions: dict) -> Artifact:
    base = info.context.settings.public_url.rstrip("/")
    return Artifact(
        sha256=sha,
        url=f"{base}/artifacts/{sha}.png",
        width=width,
        height=height,
        versions=json.dumps(versions, sort_keys=True),
    )


@strawberry.type(description="A finished render of a neuron.")
class Visualization:
    kind: RenderKind
    params: str
    artifact: Artifact


async def visualizations(info: Info, neuron: Neuron, kind) -> list[Visualization]:
    key = neuron._key
    rows = await info.context.loaders.visualizations.load((neuron._graph.sha256, key.layer, key.index))
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


def layer_visualizations(info: Info, layer, kind) -> list[UnitVisualization]:
    name = layer._graph.layers[layer.position].key
    with info.context.graphs.engine.connect() as conn:
        rows = job_domain.done_for_layer(conn, layer._graph.sha256, name, kind.value if kind else None)
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
    kind: LayerRenderKind  # type: ignore[valid-type]
    params: str = strawberry.field(description="JSON")
    dataset: str | None = strawberry.field(description="CARICATURE: the dataset of its target image")
    image: int | None = strawberry.field(description="CARICATURE: the target image's index in the dataset")
    upload: str | None = strawberry.field(description="CARICATURE of an uploaded image: that image's sha256")
    source: Artifact | None = strawberry.field(
        description="CARICATURE of an uploaded image: that image (as stored: re-encoded as PNG)"
    )
    artifact: Artifact


def layer_views(info: Info, layer, kind) -> list[LayerView]:
    name = layer._graph.layers[layer.position].key
    with info.context.graphs.engine.connect() as conn:
        rows = job_domain.layer_views(conn, layer._graph.sha256, name, kind.value if kind else None)
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


@strawberry.type
class RenderQuery:
    @strawberry.field(name="renderJobs", description="Jobs by id: poll their status and progress.")
    def render_jobs(self, info: Info, ids: list[int]) -> list[RenderJob]:
        if len(ids) > MAX_UNITS:
            raise limit(f"at most {MAX_UNITS} ids")
        with info.context.graphs.engine.connect() as conn:
            return [RenderJob.of(r) for r in job_domain.get(conn, ids)]


@strawberry.type
class RenderMutation:
    @mutation(
        role="editor",
        description="Render units (by key) or every unit of a layer. The same (pinned model, "
        "unit, kind, parameters) returns the existing job and artifact.",
    )
    def request_render(
        self,
        info: Info,
        kind: RenderKind,
        neurons: list[str] | None = None,
        layer: str | None = None,
        params: Annotated[RenderParamsInput | None, strawberry.argument()] = None,
    ) -> list[RenderJob] | None:
        account = info.context.account()
        settings = info.context.settings
        given = asdict(params) if params else {}
        batch = given.pop("batch", None)
        if batch is not None and not 1 <= batch <= MAX_UNITS:
            raise bad_input(f"batch must be 1..{MAX_UNITS}")
        p = RenderParams(**given)
        graphs = info.context.graphs
        units: list[job_domain.Unit] = []
        if layer:
            lk = graphs.resolve_layer(layer)
            g = graphs.graph(lk.model)
            n = next(layer.units for layer in g.layers if layer.key == lk.layer)
            units = [job_domain.Unit(g.key, g.sha256, lk.layer, i) for i in range(n)]
        for text in neurons or []:
            k = graphs.resolve(text)
            g = graphs.graph(k.model)
            units.append(job_domain.Unit(g.key, g.sha256, k.layer, k.index))
        if len(units) > MAX_UNITS:
            raise limit(f"at most {MAX_UNITS} units per request")
        if units:  # the rate limit counted this request once (its permission); its units count the rest
            info.context.rate_limit(account, cost=-(-len(units) // max(1, settings.render_units_per_mutation)) - 1)
        asked = request_renders(
            graphs.engine,
            settings,
            units,
            kind.value,
            p,
            requester=account.id,
            quota=Quota.of(settings),
            layer=bool(layer),
            batch=batch,
        )
        return [RenderJob.of(r) for r in asked.rows]

    @mutation(
        role="editor",
        description="Render one picture of a whole layer: its DEEPDREAM, or a CARICATURE of a dataset's image "
        "(params.dataset, params.image) or of an uploaded one (params.upload: its sha256, from POST /uploads). The "
        "same (pinned model, layer, kind, parameters) returns the existing job and artifact.",
    )
    def request_layer_render(
        self,
        info: Info,
        kind: LayerRenderKind,  # type: ignore[valid-type]
        layer: str,
        params: Annotated[RenderParamsInput | None, strawberry.argument()] = None,
    ) -> RenderJob:
        account = info.context.account()
        given = asdict(params) if params else {}
        given.pop("batch", None)  # one picture: nothing to batch
        graphs = info.context.graphs
        lk = graphs.resolve_layer(layer)
        g = graphs.graph(lk.model)
        asked = request_layer_render(
            graphs.engine,
            info.context.settings,
            layer_unit(g.key, g.sha256, lk.layer),
            kind.value,
            RenderParams(**given),
            requester=account.id,
            quota=Quota.of(info.context.settings),
        )
        return RenderJob.of(asked.rows[0])

    @mutation(
        role="editor",
        description="Cancel render jobs: queued ones end CANCELLED at once, running ones at their next progress "
        "point; neither writes an artifact. Ended jobs are returned as they are. Allowed to whoever asked for a job "
        "and to moderators: FORBIDDEN (and nothing cancelled) if any job is someone else's.",
    )
    def cancel_renders(self, info: Info, ids: list[int]) -> list[RenderJob]:
        if len(ids) > MAX_UNITS:
            raise limit(f"at most {MAX_UNITS} ids")
        account = info.context.account()
        rows = cancel_renders(info.context.graphs.engine, ids, account.id, account.at_least("moderator"))
        return [RenderJob.of(r) for r in rows]
