"""``kb circuit check KEY --dataset D``: ask for a circuit's check by experiment through the function the API and
the pages call (kb.app.renders.check_circuit: the same job, lane, idempotence and quota), and with ``--wait``
follow the job and print the figures of each target unit (the badges the circuit page shows) and the experiment's
citable key. ``kb render cancel ID`` cancels the job, as any render."""

from __future__ import annotations

import sys

import sqlalchemy as sa
import typer

from kb.app import renders
from kb.app.check_results import check_result
from kb.cli import local_server
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.render import follow
from kb.experiments import figures
from kb.experiments.checks import CheckParams
from kb.render.jobs import Job
from kb.render.quota import Quota
from kb.settings import get_settings

circuits_app = typer.Typer(help="Circuits: checks by experiment.", no_args_is_help=True)


@circuits_app.command("check")
@expected()
def check_command(
    key: str = typer.Argument(..., help="circuit:N (its current revision) or circuit:N@R", show_default=False),
    dataset: str = typer.Option(..., "--dataset", help="the data set's name (kb dataset add; demo:digits adds one)"),
    ablation: str = typer.Option("mean", "--ablation", help=f"one of {', '.join(figures.ABLATIONS)}"),
    images: int = typer.Option(256, "--images", help="how many of the data set's images (its first ones)"),
    seed: int = typer.Option(0, "--seed", help="the random circuits' and resample ablation's seed"),
    wait: bool = typer.Option(False, "--wait", help="follow the job until it ends and print the figures"),
    timeout: float = typer.Option(
        0, "--timeout", min=0, help="with --wait: give up after this many seconds (0: never)"
    ),
) -> None:
    """Check a circuit revision by experiment on a data set: for each target unit, its sufficiency and necessity
    against random circuits of as many inputs, and each edge's own effect (a job of the render queue's bulk lane;
    asked again with the same parameters, the same job and experiment)."""
    settings = get_settings()
    engine = open_engine()
    params = CheckParams(dataset=dataset, ablation=ablation.lower(), images=images, seed=seed)
    worker = None
    if wait and not settings.broker_url and not local_server.local_worker_runs(settings):
        worker = local_server.start_worker(stdout=sys.stderr)  # stdout is for the figures
        typer.echo(f"no kb serve on this database: a local worker (pid {worker.pid}) for the duration", err=True)
    try:
        asked = renders.check_circuit(engine, settings, key, params, quota=Quota.of(settings, account=False))
        [row] = asked.rows
        typer.echo(
            f"job {row.id} ({asked.lane} lane): check of {row.layer_key} on {images} images of {dataset}, "
            f"{params.ablation} ablation: {row.status.lower()}",
            err=True,
        )
        if wait:
            [row] = follow(engine, [row.id], worker, timeout, what="checking")
    finally:
        if worker is not None:
            local_server.stop_worker(worker)
    report(engine, row)


def report(engine: sa.Engine, job: Job) -> None:
    """The experiment's key and each target's badges, or the job's state."""
    if job.status == "FAILED":
        raise CliProblem(f"the check failed: {job.error or 'no reason recorded'}")
    if job.status != "DONE":
        typer.echo(f"job {job.id}  {job.status}  (kb circuit check again with --wait to follow it)")
        return
    result = check_result(engine, job.id)
    if result is None:
        raise CliProblem(f"job {job.id} is done but wrote no experiment")
    typer.echo(
        f"{result.key} of circuit:{result.circuit}@{result.revision}  "
        f"{local_server.public_url()}/circuits/{result.circuit}#experiments"
    )
    for t in result.targets:
        verdict = {True: "above random", False: "not above random", None: "undefined"}[t.beats_random]
        typer.echo(f"{t.target}  {' · '.join(t.badges)}  ({verdict})")
