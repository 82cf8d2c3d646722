"""The ``kb`` command. Each command group lives in its own module."""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError

from kb.cli import (
    accounts,
    artifacts,
    backup,
    circuits,
    claims,
    datasets,
    db,
    graph,
    help_format,
    render,
    renders,
    serve,
    worker,
)

help_format.install()

app = typer.Typer(
    help="Circuit KB: the open knowledge base of vision-model neurons.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(graph.models_app, name="models")
app.add_typer(accounts.users_app, name="user")
app.add_typer(accounts.tokens_app, name="token")
app.add_typer(claims.claims_app, name="claims")
app.add_typer(circuits.circuits_app, name="circuit")
app.add_typer(datasets.datasets_app, name="dataset")
app.add_typer(renders.renders_app, name="renders")
app.add_typer(artifacts.artifacts_app, name="artifacts")
app.command("import-families")(claims.import_families_command)
app.command("import")(graph.import_command)
app.command("neuron")(graph.neuron_command)
app.command("render")(render.render_command)
app.command("serve")(serve.serve_command)
app.command("worker")(worker.worker_command)
app.command("backup")(backup.backup_command)
app.command("restore")(backup.restore_command)


def main() -> None:
    """Expected failures are one line (kb.cli.errors); so is anything else on bad input: a traceback only with
    KB_DEBUG=1."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except ValidationError as exc:  # a KB_* setting refused (kb.settings): its own message, one line
        said = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        print(f"error: {said}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("KB_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"error: {type(exc).__name__}: {first} (KB_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
