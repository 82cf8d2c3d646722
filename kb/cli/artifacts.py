"""``kb artifacts migrate``: the referenced images from one artifact store to the other (kb.render.storage)."""

from __future__ import annotations

import typer

from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.render.storage import store_of
from kb.render.storage_migrate import migrate
from kb.settings import ARTIFACT_STORES, get_settings

artifacts_app = typer.Typer(
    help="The artifact store: rendered and uploaded images (KB_ARTIFACT_STORE).", no_args_is_help=True
)
STORES = " or ".join(ARTIFACT_STORES)


@artifacts_app.command("migrate")
@expected()
def migrate_command(
    to: str = typer.Option(..., "--to", help=f"the store to copy into: {STORES}"),
    source: str = typer.Option(
        "", "--from", help=f"the store to copy from: {STORES}; default: the one in use (KB_ARTIFACT_STORE)"
    ),
) -> None:
    """Copy every image the knowledge base references (renders and uploads) into the store TO, checking each
    one's sha256 before and after writing it. Idempotent: what is there already is left alone. Nothing is
    deleted from the source store; set KB_ARTIFACT_STORE to the new store once it has run. Fails (exit 1, one
    line) if an image is missing from the source or does not hash to its name; the others are copied."""
    settings = get_settings()
    to, source = to.strip().lower(), (source.strip().lower() or settings.store)
    for name, value in (("--to", to), ("--from", source)):
        if value not in ARTIFACT_STORES:
            raise CliProblem(f"{name} must be {STORES}, not {value!r}")
    if to == source:
        raise CliProblem(f"--from and --to are both {to}: nothing to copy")
    engine = open_engine()
    src, dest = store_of(source, settings, engine), store_of(to, settings, engine)
    done = migrate(engine, src, dest)
    typer.echo(
        f"{source} -> {to}: copied {done.copied}, already there {done.already}, {done.bytes} bytes "
        f"({done.bytes / 1e6:.2f} MB)"
    )
    if done.failed:
        parts = []
        if done.missing:
            parts.append(f"{len(done.missing)} missing from {src.where}: {', '.join(done.missing)}")
        if done.mismatched:
            parts.append(f"{len(done.mismatched)} not hashing to their sha256: {', '.join(done.mismatched)}")
        raise CliProblem("not copied: " + "; ".join(parts))
