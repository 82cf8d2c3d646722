"""Runs render jobs in a worker process: claims them, renders a batch, stores PNGs, records artifacts.

Knows the database and torch, not Celery: the task (kb.render.tasks) is a thin shell around ``run``.
Models are loaded once per process (by weights hash) and checked against the hash they were imported with.
"""

from __future__ import annotations

import logging
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sqlalchemy as sa

from kb.db.engine import engine_for
from kb.db.graph_cache import GraphCache
from kb.db.tables import model_table
from kb.render import images, jobs
from kb.render.storage import storage_from_settings
from kb.settings import Settings, get_settings

log = logging.getLogger("kb.render")
ACTIVE = 0  # jobs' tasks running in this process now (the sweeper of a one-process worker reads it)


class Permanent(Exception):
    """A job that cannot succeed on retry (wrong weights, unknown unit): it ends FAILED at once."""


@dataclass
class Outcome:
    done: list[int] = field(default_factory=list)
    retry: list[tuple[int, int]] = field(default_factory=list)  # (job id, attempts so far)
    failed: list[int] = field(default_factory=list)


def versions() -> dict:
    import torch
    import torchvision

    try:
        import lucent

        lucent_version = lucent.__version__
    except ImportError:  # pragma: no cover
        lucent_version = None
    from importlib.metadata import version

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lucent": lucent_version,
        "circuit-kb": version("circuit-kb"),
    }


def device(settings: Settings):
    import torch

    if settings.render_device:
        return torch.device(settings.render_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16(settings: Settings) -> bool:
    """bf16 on a GPU unless KB_RENDER_BF16=0. Never on a CPU: CPUs without bf16 units gain nothing, and some
    CPU kernels have no bf16 version (the avg_pool3d inside InceptionV1's local response norm)."""
    return device(settings).type == "cuda" and settings.render_bf16 is not False


@lru_cache(maxsize=4)
def _model(source: str, described: str, sha256: str, device_name: str, bf16: bool = False):
    from kb.graph import zoo
    from kb.graph.weights import reload, state_dict_sha256
    from kb.render.allocator import keep_freed_memory
    from kb.render.lucent_adapter import prepare

    keep_freed_memory()
    arch = zoo.get(source)
    model = reload(arch, described)
    got = state_dict_sha256(model.state_dict())
    if got != sha256:
        raise Permanent(
            f"this worker's weights for {source} ({described}) hash to {got[:12]}, "
            f"the model was imported with {sha256[:12]}"
        )
    return arch, prepare(model, device_name, bf16=bf16)


def run(job_ids: list[int], worker: str | None = None, settings: Settings | None = None) -> Outcome:
    global ACTIVE
    ACTIVE += 1
    try:
        return _run(job_ids, worker, settings)
    finally:
        ACTIVE -= 1


def _run(job_ids: list[int], worker: str | None = None, settings: Settings | None = None) -> Outcome:
    settings = settings or get_settings()
    engine = engine_for(settings.db_url)
    worker = worker or socket.gethostname()
    log.info("received jobs %s", job_ids)
    with engine.begin() as conn:
        started = jobs.start(conn, job_ids, worker, settings.render_lease_s)
    skipped = sorted(set(job_ids) - {j["id"] for j in started})
    if skipped:
        log.info("jobs %s: nothing to do (done, failed, or running elsewhere)", skipped)
    for j in started:
        log.info(
            "job %d started: %s %s/%s:%d, attempt %d of %d",
            j["id"],
            j["kind"],
            j["model_key"],
            j["layer_key"],
            j["unit"],
            j["attempts"],
            j["max_attempts"],
        )
    outcome = Outcome()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in started:
        groups[(job["model_sha256"], job["layer_key"], job["kind"], job["params_hash"])].append(job)
    for group in groups.values():
        try:
            _render_group(engine, settings, group)
            outcome.done += [j["id"] for j in group]
            for j in group:
                log.info("job %d done", j["id"])
        except Exception as exc:
            permanent = isinstance(exc, (Permanent, ValueError, KeyError, IndexError))
            log.exception("render of jobs %s failed", [j["id"] for j in group])
            message = f"{type(exc).__name__}: {exc}"[:2000]
            with engine.begin() as conn:
                for j in group:
                    delay = jobs.retry_delay(j["attempts"], settings.render_retry_base_s)
                    if jobs.fail(conn, j["id"], message, not permanent, delay):
                        outcome.retry.append((j["id"], j["attempts"]))
                        log.warning("job %d failed (attempt %d), again in %.1f s", j["id"], j["attempts"], delay)
                    else:
                        outcome.failed.append(j["id"])
                        log.warning("job %d FAILED after %d attempts: %s", j["id"], j["attempts"], message[:200])
    return outcome


def _render_group(engine: sa.Engine, settings: Settings, group: list[dict]) -> None:
    first = group[0]
    m = model_table
    with engine.connect() as conn:
        model_row = conn.execute(sa.select(m).where(m.c.sha256 == first["model_sha256"])).first()
    if model_row is None or model_row.removed_at is not None:
        raise Permanent(f"model {first['model_key']}@{first['model_sha256'][:12]} is not in the database")
    ids = [j["id"] for j in group]
    kind, params = first["kind"], first["params"]
    with _KeepAlive(engine, ids, settings.render_lease_s) as alive:
        pictures = _pictures(engine, settings, model_row, first, kind, params, group, alive.progress)
    _store(engine, settings, group, kind, params, pictures)


class _KeepAlive:
    """While a group renders, a thread renews the jobs' lease (and writes their progress) every third of it,
    so a slow step or a slow model load never looks like a lost worker, and a dead worker stops renewing.
    Progress is also written each time it passes another 5% of the steps (the optimisation never waits for it:
    it wakes this thread)."""

    STEP = 0.05

    def __init__(self, engine: sa.Engine, ids: list[int], lease_s: float):
        import threading

        self.engine, self.ids, self.lease_s = engine, ids, lease_s
        self.fraction = 0.0
        self.reported = 0
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kb-keepalive", daemon=True)

    def progress(self, step: int, total: int) -> None:
        self.fraction = step / total * 0.99  # 1.0 once stored
        bucket = int(step / total / self.STEP + 1e-9)
        if bucket > self.reported:
            self.reported = bucket
            self.wake.set()

    def _run(self) -> None:
        import time

        next_beat = time.monotonic() + self.lease_s / 3
        while not self.stop.is_set():
            self.wake.wait(max(0.0, next_beat - time.monotonic()))
            self.wake.clear()
            if self.stop.is_set():
                return
            next_beat = time.monotonic() + self.lease_s / 3
            try:
                with self.engine.begin() as conn:
                    jobs.heartbeat(conn, self.ids, self.fraction, self.lease_s)
            except Exception:
                log.warning("heartbeat for jobs %s failed", self.ids, exc_info=True)

    def __enter__(self) -> _KeepAlive:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.wake.set()
        self.thread.join(timeout=30)


def _pictures(engine, settings, model_row, first, kind, params, group, progress) -> list[np.ndarray]:
    where = device(settings)
    if kind == "WEIGHTS":
        pictures = _weights(engine, first["model_key"], group)
    elif kind == "DATASET_EXAMPLES":
        arch, model = _model(model_row.source, model_row.weights, model_row.sha256, str(where))
        pictures = _dataset_examples(engine, settings, arch, model, first["layer_key"], params, group, progress)
    else:
        half = bf16(settings)
        arch, model = _model(model_row.source, model_row.weights, model_row.sha256, str(where), half)
        from kb.render.batching import units_per_pass
        from kb.render.lucent_adapter import render_units

        module = arch.layer(first["layer_key"]).module
        batch = units_per_pass(model, module, params["upsample"] or params["size"], where, settings.render_device_batch)
        pictures = render_units(
            model,
            module,
            [j["unit"] for j in group],
            size=params["size"],
            steps=params["steps"],
            seed=params["seed"],
            parameterization=params["parameterization"],
            transforms=params["transforms"],
            lr=params["lr"],
            negative=params["negative"],
            neuron=kind == "NEURON_VIS",
            upsample=params["upsample"],
            preprocess="inceptionv1" if arch.source.startswith("lucent:") else "imagenet",
            device=where,
            autocast=half,
            max_batch=batch,
            progress=progress,
        )
    return pictures


def _store(engine, settings, group, kind, params, pictures) -> None:
    storage = storage_from_settings(settings)
    made_by = {
        **versions(),
        "device": device(settings).type,
        "bf16": kind in ("FEATURE_VIS", "NEURON_VIS") and bf16(settings),
    }
    with engine.begin() as conn:
        for job, rgb in zip(group, pictures, strict=True):
            data = images.png(rgb)
            sha = storage.put(data, ".png")
            jobs.finish(
                conn,
                job["id"],
                {
                    "sha256": sha,
                    "content_type": "image/png",
                    "bytes": len(data),
                    "width": int(rgb.shape[1]),
                    "height": int(rgb.shape[0]),
                    "kind": kind,
                    "params": params,
                    "versions": made_by,
                    "meta": {
                        "model": f"{job['model_key']}@{job['model_sha256'][:12]}",
                        "unit": f"{job['layer_key']}:{job['unit']}",
                    },
                },
            )


_TOPK_CACHE: dict[tuple, tuple] = {}


def _dataset_examples(engine, settings, arch, model, layer_key, params, group, progress) -> list[np.ndarray]:
    """One streamed pass over the dataset for the whole layer (kept for the next batch of the same layer)."""
    from pathlib import Path

    from kb.db.render_tables import dataset_table
    from kb.render import dataset_examples as D

    t = dataset_table
    with engine.connect() as conn:
        ds = conn.execute(sa.select(t).where(t.c.name == params["dataset"])).first()
    if ds is None:
        raise Permanent(f"no dataset {params['dataset']!r} (kb dataset add NAME PATH)")
    files = D.image_files(Path(ds.path))
    module = arch.layer(layer_key).module
    key = (id(model), module, ds.path, len(files), params["top_k"])
    if key not in _TOPK_CACHE:
        preprocess = "inceptionv1" if arch.source.startswith("lucent:") else "imagenet"
        total = max(1, len(files))
        done = [0]

        def stream():
            for indices, pixels in D.batches(files, 32):
                done[0] += len(indices)
                progress(min(done[0], total - 1), total)
                yield indices, pixels

        try:
            found, _ = D.collect(
                model, [module], stream(), params["top_k"], preprocess, device(settings), stop_after=module
            )
        except D.NoImages as exc:
            raise Permanent(f"{exc} ({ds.path})") from None
        _TOPK_CACHE.clear()
        _TOPK_CACHE[key] = (files, found[module])
    files, top = _TOPK_CACHE[key]
    return [D.grid(files, top, j["unit"]) for j in group]


def _weights(engine: sa.Engine, model_key: str, group: list[dict]) -> list[np.ndarray]:
    """A unit's ten strongest input kernels (by magnitude) as small multiples."""
    graphs = GraphCache(engine)
    g = graphs.graph(model_key)
    out = []
    for job in group:
        target = g.ordinal(job["layer_key"], job["unit"])
        positions = g.inputs.positions(target, "magnitude")[:10]
        if not len(positions):
            raise Permanent(f"{model_key}/{job['layer_key']}:{job['unit']} has no inputs (the first layer)")
        kernels = [graphs.kernel(g, int(g.inputs.other[p]), target) for p in positions]
        out.append(images.small_multiples(kernels))
    return out
