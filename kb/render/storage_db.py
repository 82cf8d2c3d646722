"""The ``database`` artifact store: each artifact as rows of the knowledge base's own database, so every API
server and render worker that reaches the database shares the pictures (no shared disk).

``artifact_blob`` holds an artifact's length and number of chunks, ``artifact_chunk`` its bytes, ``CHUNK`` bytes a
row (bytea on PostgreSQL, BLOB on SQLite). A put writes them all in one transaction (a reader never sees part of
an artifact: it looks for the ``artifact_blob`` row, which commits with its chunks): its own, or the caller's
(``conn``: the worker's, so that a picture's bytes commit with its artifact row and finished job). The same bytes
again are a no-op, and two puts of the same bytes at once both succeed (the later one's insert of the length row
waits for the first's commit, then does nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kb.db.render_tables import artifact_blob_table, artifact_chunk_table
from kb.db.tables import utcnow
from kb.render.storage import ArtifactMissing

CHUNK = 512 * 1024


class Head(NamedTuple):
    bytes: int
    chunks: int


class ArtifactDamaged(RuntimeError):
    """The stored chunks do not add up to the length the artifact was stored with."""


class DatabaseStorage:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    @property
    def where(self) -> str:
        return f"the database's artifact_blob table ({self.engine.url.render_as_string(hide_password=True)})"

    def put(self, data: bytes, suffix: str, conn: sa.Connection | None = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if conn is not None:
            self._insert(conn, sha, suffix, data)
        elif not self.exists(sha, suffix):
            with self.engine.begin() as own:
                self._insert(own, sha, suffix, data)
        return sha

    @staticmethod
    def _insert(conn: sa.Connection, sha: str, suffix: str, data: bytes) -> None:
        """The length row if there is none (ON CONFLICT DO NOTHING: a put of the same bytes at this moment waits
        for the other's commit, then finds its row), then the chunks, only with a new length row."""
        pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        head = (
            insert(artifact_blob_table)
            .values(sha256=sha, suffix=suffix, bytes=len(data), chunks=len(pieces), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["sha256", "suffix"])
            .returning(artifact_blob_table.c.chunks)
        )
        if conn.execute(head).first() is None:  # there already
            return
        if pieces:
            conn.execute(
                sa.insert(artifact_chunk_table),
                [{"sha256": sha, "suffix": suffix, "chunk_no": i, "data": p} for i, p in enumerate(pieces)],
            )

    @staticmethod
    def _header_in(conn: sa.Connection, sha256: str, suffix: str) -> Head | None:
        b = artifact_blob_table
        row = conn.execute(sa.select(b.c.bytes, b.c.chunks).where(b.c.sha256 == sha256, b.c.suffix == suffix)).first()
        return None if row is None else Head(int(row.bytes), int(row.chunks))

    def _header(self, sha256: str, suffix: str) -> Head | None:
        with self.engine.connect() as conn:
            return self._header_in(conn, sha256, suffix)

    def exists(self, sha256: str, suffix: str) -> bool:
        return self._header(sha256, suffix) is not None

    def size(self, sha256: str, suffix: str) -> int | None:
        head = self._header(sha256, suffix)
        return None if head is None else head.bytes

    def read(self, sha256: str, suffix: str) -> bytes:
        c = artifact_chunk_table
        with self.engine.connect() as conn:
            head = self._header_in(conn, sha256, suffix)
            if head is None:
                raise ArtifactMissing(f"{sha256}{suffix} is not in {self.where}")
            rows = conn.execute(
                sa.select(c.c.data).where(c.c.sha256 == sha256, c.c.suffix == suffix).order_by(c.c.chunk_no)
            ).scalars()
            data = b"".join(bytes(r) for r in rows)
        if len(data) != head.bytes:
            raise ArtifactDamaged(f"{sha256}{suffix}: {len(data)} bytes stored, {head.bytes} expected")
        return data

    def chunks(self, sha256: str, suffix: str) -> Iterator[bytes]:
        """One query (and one pooled connection, briefly) per chunk: a slow reader holds no connection."""
        head = self._header(sha256, suffix)
        if head is None:
            raise ArtifactMissing(f"{sha256}{suffix} is not in {self.where}")
        c = artifact_chunk_table
        sent = 0
        for no in range(head.chunks):
            with self.engine.connect() as conn:
                piece = conn.execute(
                    sa.select(c.c.data).where(c.c.sha256 == sha256, c.c.suffix == suffix, c.c.chunk_no == no)
                ).scalar()
            if piece is None:
                raise ArtifactDamaged(f"{sha256}{suffix}: chunk {no} of {head.chunks} is missing")
            sent += len(piece)
            yield bytes(piece)
        if sent != head.bytes:
            raise ArtifactDamaged(f"{sha256}{suffix}: {sent} bytes stored, {head.bytes} expected")

    def delete(self, sha256: str, suffix: str) -> None:
        b, c = artifact_blob_table, artifact_chunk_table
        with self.engine.begin() as conn:  # the chunks first: SQLite without foreign keys has no cascade
            conn.execute(sa.delete(c).where(c.c.sha256 == sha256, c.c.suffix == suffix))
            conn.execute(sa.delete(b).where(b.c.sha256 == sha256, b.c.suffix == suffix))
