"""``kb serve``: the API, and in the embedded default (no KB_BROKER_URL) a local render worker beside it."""

from __future__ import annotations

import gc
import inspect
import os
import shutil
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import typer

from kb.cli import local_server
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.metrics_folder import use_folder

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette


def loopback_warning(public_url: str) -> str | None:
    """One line for the log when stable URLs and citations would point at this machine only."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(public_url).hostname or "").lower()
    try:
        loopback = ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        loopback = host == "localhost" or host.endswith(".localhost")
    if loopback:
        return (
            f"warning: neuron URLs, artifact URLs and citations will carry {public_url}, a loopback address "
            f"that only this machine reaches; set KB_PUBLIC_URL to the address readers use"
        )
    return None


class _Terminated(BaseException):
    """SIGTERM reached `kb serve`: unwinds to its cleanup (serve.json, the local worker), then it dies by the signal."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs once, not interrupted by a second SIGTERM
    raise _Terminated


@expected()
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    log_level: str = typer.Option("warning", "--log-level"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="server processes (each reads the graphs)"),
    render_worker: bool = typer.Option(
        True,
        "--render-worker/--no-render-worker",
        help="with no KB_BROKER_URL, run a local render worker on the embedded "
        "SQLite broker (the same Celery tasks, not eager mode)",
    ),
) -> None:
    """Serve GraphQL at /graphql (GraphiQL in a browser), /health and the rendered images."""
    import uvicorn

    from kb.settings import get_settings
    from kb.web.client_address import TrustedProxies

    open_engine()  # the schema is current (or this says what to run) before any process starts
    TrustedProxies(get_settings().trusted_proxies)  # a bad KB_TRUSTED_PROXIES is one line, before anything starts
    TrustedProxies(get_settings().metrics_allow, "KB_METRICS_ALLOW")
    # /metrics adds up every process's counts (the --workers and the local render worker): one folder for them,
    # chosen before any of them (or this one) counts anything (kb.metrics)
    metrics_folder, own_folder = use_folder()
    if "public_url" not in get_settings().model_fields_set:  # links (neuron pages, images) point at this server
        os.environ["KB_PUBLIC_URL"] = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        get_settings.cache_clear()
    config = uvicorn.Config(
        "kb.cli.serve:server_app",  # in each server process: the process's settings, then the app
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        workers=workers,
        # slow clients: deadlines for a request's head and body, a cap on its size (kb.web.protocol)
        http="kb.web.protocol:GuardedHttpToolsProtocol",
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=get_settings().max_header_bytes,
        # X-Forwarded-For and -Proto are read in one place, by KB_TRUSTED_PROXIES (kb.web.client_address)
        proxy_headers=False,
    )
    # Bound and listening before anything is announced: a second `kb serve` on a taken port stops here, and the
    # running server's serve.json stays as it was.
    sock = local_server.listen(host, port, config.backlog)
    signal.signal(signal.SIGTERM, _on_sigterm)
    local = None
    terminated = False
    try:
        if render_worker and not get_settings().broker_url:
            local = local_server.start_worker()
            typer.echo(f"local render worker (pid {local.pid}) on the embedded broker", err=True)
        typer.echo(f"Circuit KB on http://{host}:{port}/graphql", err=True)
        if warning := loopback_warning(get_settings().public_url):
            typer.echo(warning, err=True)
        local_server.announce(get_settings().public_url, local is not None)
        _run(config, sock)
    except _Terminated:
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        local_server.withdraw()  # only this process's own serve.json
        if local is not None:
            local_server.stop_worker(local)
        sock.close()
        if own_folder:
            shutil.rmtree(metrics_folder, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if terminated:
        signal.raise_signal(signal.SIGTERM)  # cleaned up: now end by the signal, as a stopped server is expected to


def server_app() -> Starlette:
    """The app of one `kb serve` server process: uvicorn's factory, called once in each process that serves (this
    one, or each of ``--workers``, which uvicorn starts afresh by spawning). The settings of the whole process are
    applied here, once, by the process that serves, not by building an app: tests build many apps in one process,
    and an app does not own its process."""
    from kb.web.app import create_app

    # Requests execute on worker threads (kb.schema.offloop); the event loop must get the GIL back quickly
    # for /health and cheap requests while expensive ones run: 0.5 ms instead of 5 ms (measured: /health's
    # median 1.4 s -> 0.12 s beside four expensive queries on a loaded 2-core machine).
    sys.setswitchinterval(0.0005)
    return create_app(after_warm=_freeze_startup)


def _freeze_startup() -> None:
    """Once the graphs are warm (on the event loop): what start-up made (schema, catalog, graphs, modules: about
    150,000 objects) lives as long as the process; frozen, the collector stops scanning it, and a full collection no
    longer pauses every request (130 ms here; p99 99 ms -> 10 ms in bench/results/cpu-neighbors-inline.txt)."""
    gc.collect()
    gc.freeze()


def _run(config: uvicorn.Config, sock: socket.socket) -> None:
    """Uvicorn on our bound socket: one server process, or a supervisor of ``config.workers`` of them. Uvicorn
    handles SIGTERM by shutting down gracefully, then raises it again (reaching ``_on_sigterm``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    if config.workers > 1:
        # uvicorn's own call for --workers; before 0.36 (or so) the supervisor also took the server's run method
        legacy = "target" in inspect.signature(Multiprocess).parameters
        Multiprocess(config, sockets=[sock], **({"target": server.run} if legacy else {})).run()
    else:
        server.run(sockets=[sock])
        if not server.started:
            raise CliProblem("the server did not start (see the log above)")
