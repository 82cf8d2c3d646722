"""Artifact storage: rendered and uploaded images, content-addressed by the sha256 of their bytes.

``ArtifactStore`` is what every user of artifacts calls (the worker landing a picture, uploads, caricature targets,
render bundles, the ``/artifacts/<sha256>.png`` route, ``kb artifacts migrate``); ``storage_from_settings`` picks
the store ``KB_ARTIFACT_STORE`` names (``Settings.store``):

- ``files``: ``LocalStorage`` (kb.render.storage_files), files under ``KB_STORAGE_DIR``; the default on SQLite.
- ``database``: ``DatabaseStorage`` (kb.render.storage_db), chunked rows of the knowledge base's own database, so
  API servers and render workers on different machines share the pictures; the default on PostgreSQL.

Both write atomically (a reader never sees part of an artifact) and idempotently (the same bytes again are a
no-op, also when two processes put them at once). Nothing outside this module and ``store_of`` knows which
store it has.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import sqlalchemy as sa

from kb.settings import Settings


class ArtifactMissing(LookupError):
    """No artifact with this sha256 and suffix in the store."""


class ArtifactStore(Protocol):
    @property
    def where(self) -> str:
        """Where the artifacts are, for messages ("folder /x", "the database's artifact_blob table")."""
        ...

    def put(self, data: bytes, suffix: str, conn: sa.Connection | None = None) -> str:
        """Store ``data`` once, atomically; returns its sha256. The same bytes again change nothing. ``conn``: a
        transaction of the knowledge base's database the caller has open, that a store keeping artifacts there
        writes in (they commit with the caller's rows; and SQLite allows one writer at a time); a files store
        writes at once."""
        ...

    def exists(self, sha256: str, suffix: str) -> bool: ...

    def size(self, sha256: str, suffix: str) -> int | None:
        """Its length in bytes, or None if it is not stored."""
        ...

    def read(self, sha256: str, suffix: str) -> bytes:
        """Its bytes (as stored: not checked against the sha256); ArtifactMissing if it is not stored."""
        ...

    def chunks(self, sha256: str, suffix: str) -> Iterator[bytes]:
        """Its bytes a piece at a time (for streaming); ArtifactMissing, at the first piece, if it is not stored."""
        ...

    def delete(self, sha256: str, suffix: str) -> None:
        """Remove it if it is there."""
        ...


def store_of(kind: str, settings: Settings, engine: sa.Engine | None = None) -> ArtifactStore:
    """The store of this kind (``kb.settings.ARTIFACT_STORES``) for these settings; ``engine`` (default: the
    settings' database) holds a database store."""
    if kind == "files":
        from kb.render.storage_files import LocalStorage

        return LocalStorage(settings.artifacts_dir)
    if kind == "database":
        from kb.db.engine import engine_for
        from kb.render.storage_db import DatabaseStorage

        return DatabaseStorage(engine if engine is not None else engine_for(settings.db_url))
    raise ValueError(f"unknown artifact store {kind!r}: files or database")


def storage_from_settings(settings: Settings, engine: sa.Engine | None = None) -> ArtifactStore:
    """The store KB_ARTIFACT_STORE names (its default: files on SQLite, database on PostgreSQL)."""
    return store_of(settings.store, settings, engine)
