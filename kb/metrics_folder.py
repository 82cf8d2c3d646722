"""The folder where the processes of one `kb serve` or `kb worker` count their metrics together (prometheus-client's
multiprocess mode). Its own module, free of prometheus-client: the folder must be chosen before prometheus-client is
first imported (it picks its mode then), so the commands call ``use_folder`` before anything imports kb.metrics."""

from __future__ import annotations

import os
import tempfile

FOLDER_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_folder() -> tuple[str, bool]:
    """(the folder this process and the ones it starts count in, whether it was made here): an operator's own
    PROMETHEUS_MULTIPROC_DIR is kept, else a fresh temporary folder (the caller removes it when done)."""
    if os.environ.get(FOLDER_ENV):
        return os.environ[FOLDER_ENV], False
    os.environ[FOLDER_ENV] = tempfile.mkdtemp(prefix="kb-metrics-")
    return os.environ[FOLDER_ENV], True
