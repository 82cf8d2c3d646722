"""``kb worker``: a Celery worker for render jobs (one per GPU), with the stuck-job sweeper."""

from __future__ import annotations

import typer

from kb.cli.db import open_engine
from kb.cli.errors import expected


def _log_jobs() -> None:
    """Each job's receipt, start and end on stderr (kb.render at INFO), whatever Celery's own log level."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("kb.render")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False


@expected()
def worker_command(
    queues: str = typer.Option("render", "--queues", help="comma-separated queues"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="processes (keep 1 per GPU)"),
    pool: str = typer.Option("solo", "--pool", help="solo (one process) or prefork"),
    loglevel: str = typer.Option("warning", "--loglevel"),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="serve Prometheus metrics on this port (0: none; default: "
        "KB_WORKER_METRICS_PORT), at KB_WORKER_METRICS_HOST",
    ),
) -> None:
    """Consume render jobs from the broker (KB_BROKER_URL, or the embedded SQLite broker)."""
    import warnings

    from kb.settings import get_settings

    port = get_settings().worker_metrics_port if metrics_port is None else metrics_port
    if port:
        from kb.metrics_folder import use_folder

        use_folder()  # before prometheus-client is imported: the pool's processes add their counts to this one's
        from kb.metrics import serve_http

        serve_http(port, get_settings().worker_metrics_host)

    from celery.exceptions import SecurityWarning

    from kb.render.celery_app import celery_app
    from kb.render.embedded_broker import prepare
    from kb.render.enqueue import start_sweeper

    open_engine()
    app = celery_app()
    prepare(app)  # the embedded broker's tables and queue, under its lock, before the first poll
    _log_jobs()  # kb.render's lines (received, started, ended; kb.render.jobs' summary) whatever Celery logs
    start_sweeper(get_settings().render_sweep_s, knows_idle=pool == "solo" or concurrency == 1)
    embedded = not get_settings().broker_url
    if embedded:  # the local worker of `kb serve` / `kb render`: no banner, no superuser warning
        warnings.filterwarnings("ignore", category=SecurityWarning)
    argv = [
        *(["--quiet"] if embedded else []),
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv)
