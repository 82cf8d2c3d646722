"""``kb render``: request renders through the API's own use cases (kb.app.renders: the same job rows, lanes
and queue), and with ``--wait`` follow them to the end, print each artifact's URL, and exit non-zero if any
failed. ``kb render cancel ID...`` cancels jobs (the operator may cancel any).

In the embedded default (no KB_BROKER_URL) the jobs need a worker on the embedded broker: `kb serve` runs one;
when no server runs, ``--wait`` starts one for the duration."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa
import typer

from kb.app import renders
from kb.cli import local_server
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.progress import Phases
from kb.render.jobs import ENDED, LAYER_UNIT, Job
from kb.render.params import ALL_KINDS, LAYER_KINDS, RenderParams
from kb.render.quota import Quota
from kb.settings import Settings, get_settings

POLL_S = 0.5


@expected()
def render_command(
    keys: list[str] = typer.Argument(
        None, help="neuron keys, any form ('InceptionV1 4c:447' ...); or: cancel ID...", show_default=False
    ),
    kind: str = typer.Option("", "--kind", help=f"one of {', '.join(ALL_KINDS)} (required to request)"),
    layer: str | None = typer.Option(
        None, "--layer", help="render every unit of this layer (DEEPDREAM, CARICATURE: one picture of it)"
    ),
    model: str | None = typer.Option(None, "--model", help="model for keys like mixed4c:447"),
    size: int = typer.Option(128, "--size", help="image size in pixels"),
    steps: int = typer.Option(512, "--steps", help="optimisation steps"),
    seed: int = typer.Option(0, "--seed"),
    negative: bool = typer.Option(False, "--negative", help="FEATURE_VIS/NEURON_VIS: minimise instead"),
    upsample: int = typer.Option(224, "--upsample", help="fed to the model at this size (0: as is)"),
    dataset: str = typer.Option("", "--dataset", help="DATASET_EXAMPLES, CARICATURE: a dataset name (kb dataset add)"),
    top_k: int = typer.Option(9, "--top-k", help="DATASET_EXAMPLES: examples per unit"),
    image: int = typer.Option(-1, "--image", help="CARICATURE: the index of the dataset's image"),
    image_file: Path | None = typer.Option(
        None,
        "--image-file",
        help="CARICATURE: of this image file instead (PNG, JPEG, GIF, WebP, BMP; stored here as a PNG of its pixels)",
        dir_okay=False,
    ),
    wait: bool = typer.Option(False, "--wait", help="follow the jobs until they end and print artifact URLs"),
    timeout: float = typer.Option(
        0, "--timeout", min=0, help="with --wait: give up after this many seconds (0: never)"
    ),
) -> None:
    """Render units (KEY...) or a whole layer (--layer): feature visualisations, dataset examples, weights; or one
    picture of a layer: its deep dream (--kind deepdream) or a caricature (--kind caricature --dataset D --image I,
    or --image-file PICTURE.png).
    The same unit, kind and parameters is one job and one artifact: asked again, it is returned, not redone.
    A few units go to the interactive lane, a layer to the bulk lane. `kb render cancel ID...` cancels jobs."""
    if keys and keys[0] == "cancel":
        cancel(keys[1:])
        return
    kind = kind.upper()
    if kind not in ALL_KINDS:
        raise CliProblem(f"--kind must be one of {', '.join(ALL_KINDS)}, not {kind!r}")
    if kind in LAYER_KINDS and (keys or not layer):
        raise CliProblem(f"{kind} is a picture of a whole layer: name it with --layer, and no neuron keys")
    if image_file is not None and (kind != "CARICATURE" or dataset or image >= 0):
        raise CliProblem("--image-file is a caricature's target: --kind caricature, and no --dataset or --image")
    settings = get_settings()
    engine = open_engine()
    upload = upload_file(engine, settings, image_file) if image_file is not None else ""
    params = RenderParams(
        size=size,
        steps=steps,
        seed=seed,
        negative=negative,
        upsample=upsample,
        dataset=dataset,
        top_k=top_k,
        image=image,
        upload=upload,
    ).check(kind)
    params.within(kind, settings)
    units = (
        [renders.layer_of(engine, layer, model=model)]
        if kind in LAYER_KINDS and layer  # (a layer kind without --layer was refused above)
        else renders.units_of(engine, keys or [], layer, model=model)
    )
    if not units:
        raise CliProblem("name neuron keys or --layer")
    worker = None
    if wait and not settings.broker_url and not local_server.local_worker_runs(settings):
        worker = local_server.start_worker(stdout=sys.stderr)  # stdout is for the URLs
        typer.echo(f"no kb serve on this database: a local render worker (pid {worker.pid}) for the duration", err=True)
    try:
        quota = Quota.of(settings, account=False)
        if kind in LAYER_KINDS:
            asked = renders.request_layer_render(engine, settings, units[0], kind, params, quota=quota)
        else:
            asked = renders.request_renders(engine, settings, units, kind, params, quota=quota, layer=bool(layer))
        rows, ids = asked.rows, [r.id for r in asked.rows]
        fresh, unsent = len(asked.queued), len(asked.unsent)
        typer.echo(
            f"{len(ids)} {kind} jobs ({asked.lane} lane): {fresh - unsent} sent, {len(ids) - fresh} already asked for"
            + (f"; {unsent} saved but not sent (no broker answer): a worker's sweeper sends them" if unsent else ""),
            err=True,
        )
        if wait:
            rows = follow(engine, ids, worker, timeout)
    finally:
        if worker is not None:
            local_server.stop_worker(worker)
    report(engine, rows, wait)


def upload_file(engine: sa.Engine, settings: Settings, path: Path) -> str:
    """Store an image file as an upload (kb.render.uploads: the checks the API's upload makes); its sha256."""
    from kb.render.storage import storage_from_settings
    from kb.render.uploads import TooLarge, store_upload

    try:
        with open(path, "rb") as fh:
            data = fh.read(settings.upload_max_bytes + 1)  # never more than the cap (and one byte to tell)
    except OSError as exc:
        raise CliProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > settings.upload_max_bytes:
        raise TooLarge(f"{path} is over {settings.upload_max_bytes} bytes (KB_UPLOAD_MAX_BYTES)")
    up = store_upload(engine, storage_from_settings(settings, engine), settings, data, None)
    typer.echo(
        f"{'uploaded' if up.new else 'already here:'} {path.name} as {up.sha256} ({up.width}x{up.height} PNG)", err=True
    )
    return up.sha256


def follow(
    engine: sa.Engine,
    ids: list[int],
    worker: subprocess.Popen[bytes] | None,
    timeout: float,
    what: str = "rendering",
) -> list[Job]:
    """Poll the job rows until every one has ended (DONE, FAILED or CANCELLED), drawing their progress."""
    start = time.monotonic()
    last = None
    with Phases() as phases:
        if phases.bars:
            phases.stage(what, len(ids))
        while True:
            rows = renders.get_jobs(engine, ids)
            count = {s: sum(r.status == s for r in rows) for s in ("QUEUED", "RUNNING", *ENDED)}
            ended = sum(count[s] for s in ENDED)
            completed = ended + sum(r.progress or 0.0 for r in rows if r.status == "RUNNING")
            summary = ", ".join(f"{v} {k.lower()}" for k, v in count.items() if v)
            phases.update(what, completed, description=f"{what}: {summary}")
            if not phases.bars and (count != last):
                phases.line(f"{what}: {summary}")
            last = count
            if ended == len(ids):
                return rows
            if worker is not None and worker.poll() is not None:
                raise CliProblem(f"the local render worker exited ({worker.returncode}); {ended}/{len(ids)} jobs ended")
            if timeout and time.monotonic() - start > timeout:
                raise CliProblem(f"gave up after {timeout:g}s: {summary}; the jobs go on (kb render again to follow)")
            time.sleep(POLL_S)


def cancel(ids: list[str]) -> None:
    """`kb render cancel ID...`: the operator's cancel (any job), one line per job."""
    if not ids:
        raise CliProblem("name the render jobs to cancel: kb render cancel ID...")
    bad = [i for i in ids if not i.isdigit()]
    if bad:
        raise CliProblem(f"a render job id is a number, not {bad[0]!r}")
    rows = renders.cancel_renders(open_engine(), [int(i) for i in ids], by=None, moderator=True)
    for r in rows:
        typer.echo(f"job {r.id}  {_what(r)}  {r.status}")


def report(engine: sa.Engine, rows: list[Job], waited: bool) -> None:
    base = local_server.public_url()
    shas = renders.artifact_shas(engine, rows)
    failed = 0
    for r in rows:
        unit = _what(r)
        if r.status == "DONE":
            typer.echo(f"{unit}  {base}/artifacts/{shas[r.id]}.png")
        elif r.status == "FAILED":
            failed += 1
            typer.echo(f"{unit}  FAILED  {r.error or ''}")
        else:
            typer.echo(f"{unit}  {r.status}  job {r.id}")
    if failed:
        raise CliProblem(f"{failed} of {len(rows)} renders failed")
    pending = any(r.status != "DONE" for r in rows)
    if not waited and pending and not get_settings().broker_url and not local_server.running():
        typer.echo(
            "no kb serve runs here: the jobs wait for a worker (kb serve, kb worker, or kb render --wait)", err=True
        )


def _what(row: Job) -> str:
    """A job's unit, or its layer and kind for a whole layer's picture."""
    if row.unit == LAYER_UNIT:
        return f"{row.model_key}/{row.layer_key} {row.kind.lower()}"
    return f"{row.model_key}/{row.layer_key}:{row.unit}"
