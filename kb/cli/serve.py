"""``kb serve``: the API (and, from the render issue on, its embedded worker)."""

from __future__ import annotations

import typer

from kb.cli.db import open_engine
from kb.cli.errors import expected


@expected()
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    log_level: str = typer.Option("warning", "--log-level"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="server processes (each reads the graphs)"),
) -> None:
    """Serve GraphQL at /graphql (GraphiQL in a browser) and /health."""
    import uvicorn

    open_engine()  # the schema is current (or this says what to run) before any process starts
    typer.echo(f"Circuit KB on http://{host}:{port}/graphql", err=True)
    uvicorn.run("kb.web.app:create_app", factory=True, host=host, port=port, log_level=log_level,
                access_log=False, workers=workers)
