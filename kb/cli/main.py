"""The ``kb`` command. Each command group lives in its own module."""

from __future__ import annotations

import typer

from kb.cli import db, graph, serve

app = typer.Typer(help="Circuit KB: the open knowledge base of vision-model neurons.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(db.app, name="db")
app.add_typer(graph.models_app, name="models")
app.command("import")(graph.import_command)
app.command("neuron")(graph.neuron_command)
app.command("serve")(serve.serve_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
