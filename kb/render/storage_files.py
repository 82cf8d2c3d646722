"""The ``files`` artifact store: one file per artifact under ``KB_STORAGE_DIR``, as ``<sha[:2]>/<sha><suffix>``.

Writes are atomic (temporary file in the same folder, fsync, rename), so a reader never sees half a file and a
crash leaves at most a stray temporary file; two writers of the same bytes both rename a complete file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from kb.render.storage import ArtifactMissing

READ_BLOCK = 1 << 20


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def where(self) -> str:
        return f"folder {self.root}"

    def path(self, sha256: str, suffix: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def put(self, data: bytes, suffix: str, conn: sa.Connection | None = None) -> str:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha, suffix)
        if final.exists():
            return sha
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha

    def exists(self, sha256: str, suffix: str) -> bool:
        return self.path(sha256, suffix).is_file()

    def size(self, sha256: str, suffix: str) -> int | None:
        try:
            return self.path(sha256, suffix).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, sha256: str, suffix: str) -> bytes:
        try:
            return self.path(sha256, suffix).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(f"{sha256}{suffix} is not in {self.where}") from None

    def chunks(self, sha256: str, suffix: str) -> Iterator[bytes]:
        path = self.path(sha256, suffix)
        if not path.is_file():
            raise ArtifactMissing(f"{sha256}{suffix} is not in {self.where}")
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(READ_BLOCK), b"")

    def delete(self, sha256: str, suffix: str) -> None:
        self.path(sha256, suffix).unlink(missing_ok=True)
