"""Artifact storage: content-addressed (sha256) files under ``KB_STORAGE_DIR``, as ``<sha[:2]>/<sha><suffix>``
(the layout the ``/artifacts/<sha256>.png`` route of kb/web/app.py serves from).

``LocalStorage`` writes atomically (temporary file in the same folder, fsync, rename), so a reader never sees
half a file and a crash leaves at most a stray temporary file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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


def storage_from_settings(settings) -> LocalStorage:
    return LocalStorage(settings.artifacts_dir)
