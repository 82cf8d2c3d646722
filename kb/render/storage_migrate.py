"""Copy every artifact the knowledge base references (the ``artifact`` rows: renders and uploads) from one
artifact store to another (``kb artifacts migrate``), say from files on one disk to the database that every
server and worker shares.

Each artifact's bytes are checked against its sha256 before they are written (a damaged source is never copied
under its name) and read back from the destination and checked again after. One already in the destination is
left as it is, so a second run copies nothing. Nothing is deleted from the source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from kb.db.render_tables import artifact_table
from kb.render.storage import ArtifactMissing, ArtifactStore

SUFFIX = ".png"  # every artifact row is an image/png (renders and uploads alike)


@dataclass
class Migrated:
    copied: int = 0
    already: int = 0
    bytes: int = 0  # copied
    missing: list[str] = field(default_factory=list)  # not in the source store
    mismatched: list[str] = field(default_factory=list)  # bytes that do not hash to their sha256 (source or copy)

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.mismatched)


def referenced(engine: sa.Engine) -> list[str]:
    """The sha256 of every artifact row, in order."""
    a = artifact_table
    with engine.connect() as conn:
        return list(conn.execute(sa.select(a.c.sha256).distinct().order_by(a.c.sha256)).scalars())


def migrate(
    engine: sa.Engine, source: ArtifactStore, dest: ArtifactStore, tick: Callable[[], None] | None = None
) -> Migrated:
    """Copy what ``dest`` lacks of the referenced artifacts; every failure is recorded, the rest copied."""
    report = Migrated()
    for sha in referenced(engine):
        if tick is not None:
            tick()
        if dest.exists(sha, SUFFIX):
            report.already += 1
            continue
        try:
            data = source.read(sha, SUFFIX)
        except ArtifactMissing:
            report.missing.append(sha)
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            report.mismatched.append(sha)
            continue
        dest.put(data, SUFFIX)
        if hashlib.sha256(dest.read(sha, SUFFIX)).hexdigest() != sha:
            report.mismatched.append(sha)
            continue
        report.copied += 1
        report.bytes += len(data)
    return report
