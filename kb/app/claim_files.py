"""Claim files, one function per use case: ``kb claims export`` and ``kb claims import`` (the claim layer as JSON
Lines, format ``circuit-kb/claims@2``, kb.claims.transfer) and ``kb import-families`` (neuron families from the
literature as FAMILY claims, kb.claims.families). The formats and their checks are kb.claims'; this module owns
each use case's transaction, so that an import is all or nothing whichever adapter asks for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kb.app.reporting import Quiet, Reporter
from kb.claims import families, transfer
from kb.db.catalog import load_catalog


@dataclass(frozen=True)
class ClaimsExport:
    """An export: its lines (no newlines), the header first and the trailer last."""

    lines: list[str]

    @property
    def records(self) -> int:
        """The records between the header and the trailer."""
        return len(self.lines) - 2

    @property
    def text(self) -> str:
        """The file: one line each, each ending in a newline."""
        return "".join(line + "\n" for line in self.lines)


@dataclass(frozen=True)
class ClaimsImport:
    """What an import wrote, by what (users, circuits, circuit revisions, experiments, claims, revisions, ...),
    in the order kb.claims.transfer_write writes them."""

    counts: dict[str, int]

    @property
    def summary(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in self.counts.items())


def export_claims(engine: sa.Engine, reporter: Reporter | None = None) -> ClaimsExport:
    """Users (no passwords or tokens), circuits and claims with every revision, reviews with their history, and
    the feed, read in one transaction: ``stage("exporting claims")`` ticks once a line."""
    tick = (reporter or Quiet()).stage("exporting claims")
    lines = []
    with engine.connect() as conn:
        for line in transfer.export_lines(conn):
            lines.append(line)
            tick(1)
    return ClaimsExport(lines)


def split_lines(data: bytes) -> list[bytes]:
    """A file's lines as the importer reads them: split at newlines, without the empty one after the last."""
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    return raw


def import_claims(
    engine: sa.Engine, data: bytes, name: str = "claims", reporter: Reporter | None = None
) -> ClaimsImport:
    """An export (format 2, or 1) into a database with no claims or circuits yet, keys and revisions kept. Every
    record is checked before anything is written, and everything is written in one transaction: a truncated or
    invalid file (BadInput, naming the line and the field) writes nothing. Stages: ``importing NAME`` (a tick a
    line), then ``committing``."""
    reporter = reporter or Quiet()
    raw = split_lines(data)
    stage = f"importing {name}"
    with engine.begin() as conn:
        tick = reporter.stage(stage, len(raw))

        def lines() -> Iterator[bytes]:
            for line in raw:
                yield line
                tick(1)

        counts = transfer.import_lines(conn, lines())
        reporter.stage("committing")
    return ClaimsImport(counts)


@dataclass(frozen=True)
class FamiliesImport:
    created: int  # new FAMILY claims
    unchanged: int  # families imported before (same source, layer and name): left as they are
    files: int  # layer files read


def import_families(
    engine: sa.Engine,
    folder: Path,
    model: str,
    source: str,
    authors: list[str] | None = None,
    title: str | None = None,
    reporter: Reporter | None = None,
) -> FamiliesImport:
    """Each family of each layer file in ``folder`` as a FAMILY claim about ``model``'s units, citing ``source``
    (its authors and title), in one transaction: a bad file anywhere writes none of them; a re-run changes
    nothing. One stage per layer file (``families LAYER``), a tick per family."""
    reporter = reporter or Quiet()
    current: list[str] = []

    def progress(layer: str, n: int) -> Callable[[int], None]:
        if current:
            reporter.done(current.pop())
        current.append(f"families {layer}")
        return reporter.stage(current[0], n)

    with engine.begin() as conn:
        report = families.import_families(
            conn, load_catalog(conn), folder, model, source, authors, title, progress=progress
        )
    return FamiliesImport(report.created, report.unchanged, report.files)
