"""``kb import``, ``kb models``, ``kb neuron``: the neuron graph from the command line."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from kb.app import datasets
from kb.app.graph_reads import Neighbour
from kb.app.models import models
from kb.app.neuron_lookup import look_up_neuron
from kb.cli import local_server
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.progress import Phases
from kb.settings import get_settings

models_app = typer.Typer(help="Imported models.", invoke_without_command=True)


@expected()
def import_command(
    source: str = typer.Argument(
        ...,
        help="lucent:inceptionv1, torchvision:NAME (any classification model), timm:NAME, "
        "module:package.module:factory (your own code), or demo:digits (trained here, offline)",
    ),
    key: str | None = typer.Option(None, "--key", help="model key (default: the architecture's name)"),
    weights: str | None = typer.Option(
        None,
        "--weights",
        help="a torchvision weights name (DEFAULT, IMAGENET1K_V1...), 'hub' (timm's), a checkpoint path, 'random', "
        "or for demo:digits 'trained' (its default: trained here from --seed)",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="seed for --weights random, or for demo:digits' training (default 0)"
    ),
    layers: str | None = typer.Option(
        None, "--layers", help="significant layers: module paths or globs, comma-separated (layer1,layer2.*)"
    ),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="CHANNELS,HEIGHT,WIDTH of the input (default: the model's, e.g. 3,224,224)"
    ),
) -> None:
    """Import a model: its significant layers, every unit, and the weighted connections between them."""
    from kb.app.model_import import ImportProblem, import_model  # torch only for this command
    from kb.graph.extract import ExtractionError
    from kb.graph.weights import WeightsProblem
    from kb.graph.zoo.any_model import SourceProblem, parse_input_shape

    try:
        shape = parse_input_shape(input_shape) if input_shape is not None else None
    except SourceProblem as exc:
        raise CliProblem(str(exc)) from None
    engine = open_engine()
    try:
        with Phases() as phases:
            report = import_model(
                engine,
                source,
                key=key,
                weights=weights,
                seed=seed,
                reporter=phases,
                graphs_dir=get_settings().graphs_dir,
                layers=layers,
                input_shape=shape,
            )
    except (ImportProblem, WeightsProblem, ExtractionError) as exc:
        raise CliProblem(str(exc)) from None
    except sa.exc.IntegrityError:
        raise CliProblem(f"model key {key or source} was taken while importing; nothing was written") from None
    if report.already:
        typer.echo(f"{report.key} is already imported with these weights ({report.sha256[:12]}); nothing to do")
    else:
        secs = report.seconds
        typer.echo(
            f"imported {report.key}@{report.sha256[:12]} from {report.source} ({report.weights}): "
            f"{report.layers} layers, {report.units} units, {report.edges} connections in {secs['total']:.1f}s "
            f"(weights {secs['compute edges']:.1f}s, write {secs['write']:.1f}s)"
        )
    _add_dataset(engine, report.source)


def _add_dataset(engine: sa.Engine, source: str) -> None:
    """The images the model was trained on, as a data set (demo:digits), unless one of that name exists."""
    added = datasets.add_model_dataset(engine, source, get_settings().data_dir)
    if added is None:
        return
    if added.outcome == "taken":
        typer.echo(f"dataset {added.name} is another folder ({added.path}): left as it is", err=True)
    else:
        typer.echo(f"dataset {added.name}: {added.path}")


@models_app.callback()
@expected()
def list_models(ctx: typer.Context) -> None:
    """List models (with `kb models remove KEY` to retire one)."""
    if ctx.invoked_subcommand:
        return
    rows = models(open_engine())
    if not rows:
        typer.echo("no models yet: try `kb import lucent:inceptionv1 --weights random --seed 0`")
        return
    for r in rows:
        state = f"removed {r.removed_at:%Y-%m-%d}" if r.removed_at else f"{r.layers} layers, {r.units} units"
        typer.echo(f"{r.key}@{r.sha256[:12]}  {r.source}  {r.weights}  {state}")


@models_app.command("remove")
@expected()
def remove(key: str, reason: str = typer.Option(..., "--reason", help="why, kept with the tombstone")) -> None:
    """Remove a model's graph; its key stays as a tombstone and is never reused."""
    from kb.app.model_import import ImportProblem, remove_model

    try:
        files = remove_model(open_engine(), key, reason, graphs_dir=get_settings().graphs_dir)
    except ImportProblem as exc:
        raise CliProblem(str(exc)) from None
    freed = "".join(f"; deleted {p}" for p in files if not p.name.startswith("."))
    typer.echo(f"removed {key}; its keys now resolve to 'removed'{freed}")


def _print_edges(title: str, edges: list[Neighbour]) -> None:
    if not edges:
        return
    layers = sorted({e.unit.layer.key for e in edges})
    typer.echo(f"{title} (from {', '.join(layers)}; {edges[0].method}):")
    for e in edges:
        typer.echo(f"  {e.weight:+9.4f}  |K| {e.magnitude:8.4f}  {e.unit.key}")


@expected()
def neuron_command(
    key: str = typer.Argument(
        ..., help="any form: inceptionv1/mixed4c:447, 'InceptionV1 4c:447', models/inceptionv1/mixed4c_0/447 ..."
    ),
    inputs: int = typer.Option(0, "--inputs", min=0, max=1000, help="show the top N inputs by weight"),
    outputs: int = typer.Option(0, "--outputs", min=0, max=1000, help="show the top N outputs by weight"),
    model: str | None = typer.Option(None, "--model", help="model for keys like mixed4c:447"),
) -> None:
    """Resolve a neuron key and show its canonical and pinned keys, its page, the claims about it and its
    strongest connections."""
    found = look_up_neuron(
        open_engine(), key, model=model, inputs=inputs, outputs=outputs, graphs_dir=get_settings().graphs_dir
    )
    typer.echo(found.unit.key)
    typer.echo(f"pinned  {found.unit.pinned_key}")
    typer.echo(f"url     {local_server.public_url()}{found.unit.neuron_key.path()}")
    typer.echo(f"claims  {len(found.claims) or 'none yet'}")
    for c in found.claims:
        typer.echo(f"  claim:{c.id}  {c.status:<9}  {c.kind:<12}  {c.label}")
    if inputs:
        _print_edges(f"top {inputs} inputs by weight", found.inputs)
    if outputs:
        _print_edges(f"top {outputs} outputs by weight", found.outputs)
