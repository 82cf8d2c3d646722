"""A ``kb serve`` process for the benches that load a real server: on a free localhost port, waited for until its
graphs are loaded, stopped (its process group) on the way out, also on failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

KB_BIN = Path(sys.executable).with_name("kb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(env: dict[str, str], *args: str, timeout_s: float = 300) -> Iterator[tuple[str, int]]:
    """``kb serve --no-render-worker ARGS`` with ``env`` (added to this process's): yields (base URL, pid)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(KB_BIN), "serve", "--port", str(port), "--no-render-worker", *args],
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:  # a server process starting: polled
            try:
                if httpx.get(f"{base}/health", timeout=5).json().get("graphs_loaded"):
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"kb serve did not load its graphs in {timeout_s:g} s")
            time.sleep(0.5)
        yield base, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
