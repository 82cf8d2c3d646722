"""GraphQL of the render layer: request renders (and circuit checks, a job of the same queue), follow jobs.

The finished pictures a neuron or layer lists are kb.schema.picture_types'."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from kb.app import renders
from kb.experiments.checks import CheckParams
from kb.experiments.store import KIND as CHECK
from kb.graph.keys import KeyProblem
from kb.render.jobs import LAYER_UNIT, Job
from kb.render.lanes import LANES
from kb.render.params import RenderParams
from kb.render.quota import Quota
from kb.schema.auth import mutation
from kb.schema.claim_types import Person, _person
from kb.schema.context import Info
from kb.schema.errors import CodedError, bad_input, limit
from kb.schema.experiment_types import Ablation, Experiment, experiment_of_job
from kb.schema.fields import field
from kb.schema.picture_types import Artifact, LayerRenderKind, RenderKind, _artifact
from kb.schema.types import Neuron

# an enum built from kb.render's lanes at run time (what strawberry reads); mypy sees a class of no members
if TYPE_CHECKING:

    class RenderLane(Enum): ...
else:
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


@strawberry.type(description="One unit's render: a row that says what is asked, how far it is, what it made.")
class RenderJob:
    id: int
    kind: RenderKind
    status: str = strawberry.field(
        description="QUEUED, RUNNING, DONE, FAILED or CANCELLED (cancelRenders: no artifact)"
    )
    lane: RenderLane
    attempts: int
    progress: float
    error: str | None
    params: str = strawberry.field(description="JSON")
    created_at: datetime
    finished_at: datetime | None
    _row: strawberry.Private[Job]

    @classmethod
    def of(cls, row: Job) -> RenderJob:
        return cls(
            id=row.id,
            kind=RenderKind[row.kind],
            status=row.status,
            lane=RenderLane[row.lane.upper()],
            attempts=row.attempts,
            progress=row.progress,
            error=row.error,
            params=json.dumps(row.params, sort_keys=True),
            created_at=row.created_at,
            finished_at=row.finished_at,
            _row=row,
        )

    @field(description="the layer's key (model/layer): of the unit's layer, or of a whole layer's picture")
    def layer(self) -> str:
        return f"{self._row.model_key}/{self._row.layer_key}"

    @field(description="the unit rendered; null for a picture of a whole layer (DEEPDREAM, CARICATURE)")
    def neuron(self, info: Info) -> Neuron | None:
        r = self._row
        if r.unit == LAYER_UNIT:
            return None
        try:
            key = info.context.graphs.resolve(f"{r.model_key}/{r.layer_key}:{r.unit}")
            return Neuron.of_key(info.context.graphs.graph(key.model), key)
        except (KeyProblem, LookupError):
            return None

    @field(
        description="the account whose request queued it (after a FAILED end, the last to ask again); null for "
        "the operator's CLI. Moderators and admins only: FORBIDDEN for anyone else"
    )
    async def requested_by(self, info: Info) -> Person | None:
        account = info.context.account()
        if not account.at_least("moderator"):
            raise CodedError(
                f"who asked for a render is shown to moderators; {account.name} is {account.role}", "FORBIDDEN"
            )
        user_id = self._row.requested_by
        return await _person(info, user_id) if user_id is not None else None

    @field(description="CIRCUIT_CHECK: the experiment it measured, once DONE")
    def experiment(self, info: Info) -> Experiment | None:
        if self._row.kind != CHECK or self._row.status != "DONE":
            return None
        return experiment_of_job(info, self._row.id)

    @strawberry.field
    async def artifact(self, info: Info) -> Artifact | None:
        if not self._row.artifact_id:
            return None
        a = await info.context.loaders.artifact.load(self._row.artifact_id)
        return _artifact(info, a["sha256"], a["width"], a["height"], a["versions"])


@strawberry.type
class RenderQuery:
    @field(name="renderJobs", description="Jobs by id: poll their status and progress.")
    def render_jobs(self, info: Info, ids: list[int]) -> list[RenderJob]:
        if len(ids) > MAX_UNITS:
            raise limit(f"at most {MAX_UNITS} ids")
        return [RenderJob.of(r) for r in renders.get_jobs(info.context.engine, ids)]


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
        units = renders.units_of(info.context.engine, neurons or [], layer, keys=graphs)
        if len(units) > MAX_UNITS:
            raise limit(f"at most {MAX_UNITS} units per request")
        if units:  # the rate limit counted this request once (its permission); its units count the rest
            info.context.rate_limit(account, cost=-(-len(units) // max(1, settings.render_units_per_mutation)) - 1)
        asked = renders.request_renders(
            info.context.engine,
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
        kind: LayerRenderKind,
        layer: str,
        params: Annotated[RenderParamsInput | None, strawberry.argument()] = None,
    ) -> RenderJob:
        account = info.context.account()
        given = asdict(params) if params else {}
        given.pop("batch", None)  # one picture: nothing to batch
        graphs = info.context.graphs
        asked = renders.request_layer_render(
            info.context.engine,
            info.context.settings,
            renders.layer_of(info.context.engine, layer, keys=graphs),
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
        rows = renders.cancel_renders(info.context.engine, ids, by=account.id, moderator=account.at_least("moderator"))
        return [RenderJob.of(r) for r in rows]


@strawberry.type
class ExperimentMutation:
    @mutation(
        role="editor",
        description="Check a circuit revision by experiment (circuit:N pins its current revision): for each target "
        "unit, m(M), m(∅), sufficiency f(C), necessity 1 - f(M-C), their random baseline (draws of as many inputs "
        "of the same layer) and each edge's own effect, on `images` images of a data set with an ablation. A job of "
        "the render queue (bulk lane; follow it with renderJobs, cancel it with cancelRenders); the same circuit "
        "revision and parameters return the existing job, and its experiment once done.",
    )
    def check_circuit(
        self,
        info: Info,
        key: str,
        dataset: str,
        ablation: Ablation = Ablation["MEAN"],
        images: int = 256,
        seed: int = 0,
    ) -> RenderJob:
        account = info.context.account()
        asked = renders.check_circuit(
            info.context.engine,
            info.context.settings,
            key,
            CheckParams(dataset=dataset, ablation=ablation.value, images=images, seed=seed),
            requester=account.id,
            quota=Quota.of(info.context.settings),
        )
        return RenderJob.of(asked.rows[0])
