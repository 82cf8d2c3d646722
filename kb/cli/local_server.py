"""What a running `kb serve` leaves in the data folder (``serve.json``): its URL, its pid (and the process's start
time), the database it serves and whether it runs a local render worker. Other commands read it to print links
that point at the server that actually runs (`kb neuron`, `kb render`) and to know whether renders have a worker
already.

`kb serve` writes it only once its socket listens (a second server on a taken port never touches it), removes it
only if the file is still its own, also on SIGTERM; a reader ignores a file whose process is gone (or whose pid
now belongs to another process: the start time differs)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, TypedDict

from kb.cli.errors import CliProblem
from kb.settings import Settings, get_settings


class ServeInfo(TypedDict):
    """serve.json, as `kb serve` writes it."""

    url: str
    pid: int
    started: int | None  # the process's start time (``_start_time``), where known
    db_url: str
    local_worker: bool


def _file(settings: Settings) -> Path:
    return settings.data_dir / "serve.json"


def _alive(pid: int, started: int | None = None) -> bool:
    """PID runs (and, where its start time is known, is the same process, not a later one given the pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _start_time(pid) in (None, started)


def _start_time(pid: int) -> int | None:
    """Linux: when the process started, in clock ticks since boot (/proc/PID/stat, field 22); else None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # the fields after "(comm)" start at field 3
    except (OSError, ValueError, IndexError):
        return None


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The server's socket, bound and listening; a taken port is one line (CliProblem), not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT, not one in use
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = "the address is in use (another kb serve?)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CliProblem(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)  # uvicorn's worker processes (--workers) serve it too
    return sock


def announce(url: str, local_worker: bool, settings: Settings | None = None) -> Path:
    """Written by `kb serve` once it knows its address (removed by ``withdraw``)."""
    settings = settings or get_settings()
    path = _file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"serve.json.{os.getpid()}.tmp")
    pid = os.getpid()
    info: ServeInfo = {
        "url": url,
        "pid": pid,
        "started": _start_time(pid),
        "db_url": settings.db_url,
        "local_worker": local_worker,
    }
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)
    return path


def withdraw(settings: Settings | None = None) -> None:
    path = _file(settings or get_settings())
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def running(settings: Settings | None = None) -> ServeInfo | None:
    """The `kb serve` that runs on this data folder and database, or None."""
    settings = settings or get_settings()
    try:
        info: ServeInfo = json.loads(_file(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        pid, started = int(info.get("pid") or 0), info.get("started")
        alive = _alive(pid, None if started is None else int(started))
    except (TypeError, ValueError):
        return None
    if info.get("db_url") != settings.db_url or not alive:
        return None
    return info


def local_worker_runs(settings: Settings | None = None) -> bool:
    """The `kb serve` that runs here (``running``) has a local render worker beside it."""
    info = running(settings)
    return info is not None and bool(info.get("local_worker"))


def public_url(settings: Settings | None = None) -> str:
    """KB_PUBLIC_URL when it is set, else the running server's address, else the default."""
    settings = settings or get_settings()
    if "public_url" not in settings.model_fields_set and (info := running(settings)):
        return info["url"].rstrip("/")
    return settings.public_url.rstrip("/")


def _die_with_parent() -> None:
    """Linux: the local worker gets SIGTERM when its parent exits, however it exits (even SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_worker(stdout: IO[Any] | None = None) -> subprocess.Popen[bytes]:
    """A render worker on the embedded broker, as a child process (`kb serve`'s, or `kb render --wait`'s)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kb", "worker"], stdout=stdout, start_new_session=True, preexec_fn=_die_with_parent
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
