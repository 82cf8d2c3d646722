"""Artifact storage: content-addressed (sha256) bytes behind one small interface.

``LocalStorage`` writes under ``KB_STORAGE_DIR`` atomically (temporary file in the same folder, fsync,
rename), so a reader never sees half a file and a crash leaves at most a stray temporary file. An
S3-compatible store implements the same three methods when workers run on other machines.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    def put(self, data: bytes, suffix: str) -> str: ...
    def open(self, sha256: str, suffix: str) -> bytes: ...
    def exists(self, sha256: str, suffix: str) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, sha256: str, suffix: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def put(self, data: bytes, suffix: str) -> str:
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

    def open(self, sha256: str, suffix: str) -> bytes:
        return self.path(sha256, suffix).read_bytes()

    def exists(self, sha256: str, suffix: str) -> bool:
        return self.path(sha256, suffix).exists()


def storage_from_settings(settings) -> Storage:
    return LocalStorage(settings.artifacts_dir)
