"""Starting the real `kb serve` for tests that need HTTP against a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
from waits import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def kb_serve(env: dict, *args: str, timeout: float = 60, log: Path | None = None, port: int | None = None):
    """Yields the base URL once /health answers; stops the server (and a local worker) afterwards by SIGTERM.
    ``log``: a file that gets the server's stdout and stderr; ``port``: default, a free one."""
    port = port or free_port()
    exe = Path(sys.executable).parent / "kb"
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), *args],
        env={**os.environ, **env},
        start_new_session=True,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, f"kb serve exited ({proc.returncode}) before it answered /health"
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout, f"kb serve on port {port} to answer /health", every=0.3)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if log:
            out.close()
