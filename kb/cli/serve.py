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
) -> None:
    """Serve GraphQL at /graphql (GraphiQL in a browser) and /health."""
    import uvicorn

    from kb.web.app import create_app

    engine = open_engine()
    typer.echo(f"Circuit KB on http://{host}:{port}/graphql", err=True)
    uvicorn.run(create_app(engine=engine), host=host, port=port, log_level=log_level, access_log=False,
                loop="auto", http="auto")
