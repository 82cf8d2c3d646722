"""Starting the real `kb serve` for tests that need HTTP against a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


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
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and proc.poll() is None, "kb serve did not start"
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        if log:
            out.close()
