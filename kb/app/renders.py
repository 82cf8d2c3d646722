"""Renders and circuit checks, one function per use case: the API (requestRender, requestLayerRender, checkCircuit,
cancelRenders, renderJobs), the pages' render forms and the CLI (``kb render``, ``kb render cancel``, ``kb circuit
check``) call these, so a render is asked for, refused, found again and cancelled the same way whoever asks. The
rules (kinds, parameters, lanes, quotas, who may cancel) are kb.render's and kb.experiments'; this module reads the
keys, owns the transactions and returns typed jobs (kb.render.jobs.Job).

Asking is two steps, because the API charges its rate limit by the units a request names before anything is saved:
``units_of``/``layer_of`` read the keys, then ``request_renders``/``request_layer_render`` save the jobs (existing ones
reused: the same pinned model, unit, kind and parameters is one job) in one transaction and send the new ones to the
broker after its commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from kb.db.catalog import load_catalog
from kb.experiments.checks import LANE as CHECK_LANE
from kb.experiments.checks import CheckParams, check_job
from kb.experiments.store import KIND as CHECK
from kb.graph.keys import Catalog, LayerKey, ModelRef, NeuronKey
from kb.render import jobs, requests
from kb.render.jobs import Job, Unit
from kb.render.layer_renders import LayerRequest, open_jobs
from kb.render.layer_renders import layer_requests as find_layer_requests
from kb.render.params import RenderParams
from kb.render.quota import Quota
from kb.render.requests import Requested
from kb.settings import Settings

__all__ = [
    "Job",
    "Keys",
    "LayerJobs",
    "Requested",
    "artifact_shas",
    "cancel_renders",
    "check_circuit",
    "get_jobs",
    "layer_of",
    "layer_request_jobs",
    "layer_requests",
    "request_layer_render",
    "request_renders",
    "units_of",
]


class Keys(Protocol):
    """What reads keys to models: the API's kb.serving.Graphs (its catalog kept, re-read for a key it does not
    know), or a catalog read for one call (``CatalogKeys``: the CLI's)."""

    def resolve(self, text: str, default_model: str | None = None) -> NeuronKey: ...

    def resolve_layer(self, text: str, default_model: str | None = None) -> LayerKey: ...

    def catalog(self, refresh: bool = False) -> Catalog: ...


@dataclass(frozen=True)
class CatalogKeys:
    """Keys read in one catalog, read once (a process that keeps no Graphs: the CLI)."""

    snapshot: Catalog

    def resolve(self, text: str, default_model: str | None = None) -> NeuronKey:
        return self.snapshot.neuron(text, default_model)

    def resolve_layer(self, text: str, default_model: str | None = None) -> LayerKey:
        return self.snapshot.layer(text, default_model)

    def catalog(self, refresh: bool = False) -> Catalog:
        return self.snapshot


def _keys(engine: sa.Engine, keys: Keys | None) -> Keys:
    if keys is not None:
        return keys
    with engine.connect() as conn:
        return CatalogKeys(load_catalog(conn))


def _model(keys: Keys, key: str) -> ModelRef:
    return keys.catalog().model(key)


def units_of(
    engine: sa.Engine,
    neurons: Sequence[str],
    layer_key: str | None = None,
    *,
    model: str | None = None,
    keys: Keys | None = None,
) -> list[Unit]:
    """The units a request names: every unit of ``layer_key`` (if given), then each of ``neurons`` (any key form;
    ``model`` for keys that name none), pinned to their model's weights. A KeyProblem (BAD_KEY, NOT_FOUND) for a key
    that names nothing here. ``keys``: the caller's reader (else the catalog is read now)."""
    keys = _keys(engine, keys)
    out: list[Unit] = []
    if layer_key:
        lk = keys.resolve_layer(layer_key, model)
        m = _model(keys, lk.model)
        ref = m.layer(lk.layer)
        assert ref is not None  # resolve_layer found it
        out += [Unit(m.key, m.sha256, lk.layer, i) for i in range(ref.units)]
    for text in neurons:
        k = keys.resolve(text, model)
        m = _model(keys, k.model)
        out.append(Unit(m.key, m.sha256, k.layer, k.index))
    return out


def layer_of(engine: sa.Engine, layer_key: str, *, model: str | None = None, keys: Keys | None = None) -> Unit:
    """The job key of a whole layer's picture (DEEPDREAM, CARICATURE), pinned to the model's weights."""
    keys = _keys(engine, keys)
    lk = keys.resolve_layer(layer_key, model)
    m = _model(keys, lk.model)
    return requests.layer_unit(m.key, m.sha256, lk.layer)


def request_renders(
    engine: sa.Engine,
    settings: Settings,
    units: list[Unit],
    kind: str,
    params: RenderParams,
    *,
    requester: int | None = None,
    quota: Quota | None = None,
    layer: bool = False,
    lane: str | None = None,
    batch: int | None = None,
) -> Requested:
    """Render ``units`` (from ``units_of``): the parameters checked (BAD_INPUT, NOT_FOUND for a data set or upload
    not here), the jobs saved in one transaction (existing ones reused; ``requester``'s ``quota`` counted), then
    the new ones sent. ``layer``: the units are a whole layer (the bulk lane; a few units are interactive);
    ``lane`` says it instead. A job saved but not sent (the broker did not answer) is still returned, QUEUED: a
    worker's sweeper sends it (``Requested.unsent``)."""
    lane = requests.check(engine, settings, units, kind, params, layer=layer, lane=lane)
    with engine.begin() as conn:
        ids, queued = jobs.request(conn, units, kind, params.relevant(kind), requester, quota, lane)
        rows = jobs.get(conn, ids)
    return requests.send(engine, Requested(rows, lane, queued), batch)


def request_layer_render(
    engine: sa.Engine,
    settings: Settings,
    layer_unit: Unit,
    kind: str,
    params: RenderParams,
    *,
    requester: int | None = None,
    quota: Quota | None = None,
) -> Requested:
    """One picture of a whole layer (``kind`` one of LAYER_KINDS; ``layer_unit`` from ``layer_of``): one job per
    (pinned model, layer, kind, parameters), in the interactive lane."""
    requests.check_layer_kind(kind)
    return request_renders(
        engine, settings, [layer_unit], kind, params, requester=requester, quota=quota, lane="interactive"
    )


def check_circuit(
    engine: sa.Engine,
    settings: Settings,
    circuit_key: str,
    params: CheckParams,
    *,
    requester: int | None = None,
    quota: Quota | None = None,
) -> Requested:
    """Queue the check of ``circuit_key`` (``circuit:N`` pins its current revision, ``circuit:N@R`` that one) on
    a data set, in the bulk lane, or return the existing job of the same circuit revision and parameters (done: its
    experiment). Only the queue quota counts: the seeds per unit are a render's ceiling."""
    quota = Quota(queued=quota.queued) if quota is not None else None
    with engine.begin() as conn:  # the circuit revision read and its job written in one transaction
        unit, stored = check_job(conn, circuit_key, params)
        ids, queued = jobs.request(conn, [unit], CHECK, stored, requester, quota, CHECK_LANE)
        rows = jobs.get(conn, ids)
    return requests.send(engine, Requested(rows, CHECK_LANE, queued))


def cancel_renders(engine: sa.Engine, ids: list[int], *, by: int | None, moderator: bool) -> list[Job]:
    """Cancel jobs that are QUEUED or RUNNING (a running one stops at its next progress point and lands nothing);
    ended ones are returned as they are, all in the order asked (each once). Allowed to whoever asked for a job
    (``by``) and to moderators (and the operator's CLI: ``moderator``); anyone else's job makes the whole call
    FORBIDDEN, and an id with no job NOT_FOUND: then nothing is cancelled."""
    with engine.begin() as conn:
        rows = jobs.get(conn, list(dict.fromkeys(ids)))
        requests.check_cancel(rows, ids, by, moderator)
        cancelled = jobs.cancel(conn, [r.id for r in rows])
        if cancelled:
            requests.log.info("jobs %s cancelled", cancelled)
        return jobs.get(conn, [r.id for r in rows])


def get_jobs(engine: sa.Engine, ids: list[int]) -> list[Job]:
    """The jobs of ``ids`` that exist, in that order (polling their status and progress)."""
    with engine.connect() as conn:
        return jobs.get(conn, ids)


def artifact_shas(engine: sa.Engine, rows: Sequence[Job]) -> dict[int, str]:
    """The sha256 of each finished job's artifact (its image's name), by job id."""
    with engine.connect() as conn:
        found = jobs.artifacts(conn, [r.artifact_id for r in rows if r.artifact_id])
    return {r.id: found[r.artifact_id]["sha256"] for r in rows if r.artifact_id in found}


@dataclass(frozen=True)
class LayerJobs:
    """The open jobs of one of a layer's requests (kb.render.layer_renders.LayerRequest.id)."""

    mine: list[int]  # those the reader may cancel: their own, or every one for a moderator
    anyone: list[int]  # whoever asked for them


def layer_request_jobs(
    engine: sa.Engine, keys: Keys, layer_key: str, request_id: str, reader: int, moderator: bool
) -> LayerJobs:
    """The open jobs of a layer's request, as the layer page's cancel button finds them; a KeyProblem when the
    layer (or its model) is not here."""
    lk = keys.resolve_layer(layer_key)
    sha = _model(keys, lk.model).sha256
    with engine.connect() as conn:
        mine = open_jobs(conn, sha, lk.layer, request_id, None if moderator else reader)
        return LayerJobs(mine, mine if moderator else open_jobs(conn, sha, lk.layer, request_id, None))


def layer_requests(engine: sa.Engine, model_sha256: str, layer_key: str, reader: int | None) -> list[LayerRequest]:
    """A layer's recent whole-layer requests, newest first, with how far each is and how many of its open jobs
    are ``reader``'s (the layer page's render panel)."""
    with engine.connect() as conn:
        return find_layer_requests(conn, model_sha256, layer_key, reader)
