"""serve.json, what a running `kb serve` leaves in its data folder: written only once the server listens, removed
only by its own process (on SIGTERM too), and ignored by the CLI once that process is gone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from servers import free_port, kb_serve

from kb.cli import local_server
from kb.settings import get_settings

KB = str(Path(sys.executable).parent / "kb")


def _kb(kb_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KB, *args], env={**os.environ, **kb_env}, capture_output=True, text=True, timeout=300)


def _link(kb_env) -> str:
    """The page URL `kb neuron` prints: it points at the server that runs."""
    r = _kb(kb_env, "neuron", "InceptionV1 4c:447")
    assert r.returncode == 0, r.stderr
    return next(line.split()[1] for line in r.stdout.splitlines() if line.startswith("url "))


def test_a_second_kb_serve_on_a_taken_port_leaves_the_first_alone(kb_env, inceptionv1):
    path = Path(kb_env["KB_DATA_DIR"]) / "serve.json"
    port = free_port()
    with kb_serve(kb_env, "--no-render-worker", port=port) as base:
        first = json.loads(path.read_text())
        assert first["url"] == base and first["db_url"] == get_settings().db_url
        cmdline = Path(f"/proc/{first['pid']}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and str(port).encode() in cmdline  # the pid is the running server's

        second = _kb(kb_env, "serve", "--port", str(port), "--no-render-worker")
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"error: cannot listen on 127.0.0.1:{port}: the address is in use (another kb serve?)"
        ]
        assert json.loads(path.read_text()) == first  # the running server's file, as it was
        assert local_server.running(get_settings()) == first
        assert _link(kb_env).startswith(f"{base}/n/inceptionv1/")
        assert httpx.get(f"{base}/health").status_code == 200
    # kb_serve stopped it with SIGTERM (and waited for it): its file went with it
    assert not path.exists()
    assert _link(kb_env).startswith("http://127.0.0.1:8000/n/")


def test_a_serve_json_whose_process_is_gone_is_ignored(kb_env):
    settings = get_settings()
    path = Path(kb_env["KB_DATA_DIR"]) / "serve.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    info = {"url": "http://127.0.0.1:8799", "db_url": settings.db_url, "local_worker": True}
    path.write_text(json.dumps({**info, "pid": gone.pid}))
    assert local_server.running(settings) is None
    assert local_server.public_url(settings) == "http://127.0.0.1:8000"
    # a pid that runs again, but as another process (its start time differs from the one the file recorded)
    me = os.getpid()
    path.write_text(json.dumps({**info, "pid": me, "started": local_server._start_time(me) + 1}))
    assert local_server.running(settings) is None
    path.write_text(json.dumps({**info, "pid": me, "started": local_server._start_time(me)}))
    assert local_server.running(settings)["url"] == "http://127.0.0.1:8799"
    local_server.withdraw(settings)  # the file names this process: its own to remove
    assert not path.exists()
