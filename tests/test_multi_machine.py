"""The production shape on one machine: two `kb serve` processes and `kb worker`s, each with its own data folder and
no folder shared, all on PostgreSQL + Redis (KB_ARTIFACT_STORE's default there: the database). A render asked
through server A is rendered by a worker, survives that worker's SIGKILL mid-render (another worker finishes it,
once), and its image is served by server B; B builds its own graph file from the database on its first query; a
claim made through A reaches a live stream open on B."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import BACKEND
from servers import kb_serve
from waits import poll

pytestmark = pytest.mark.skipif(
    BACKEND != "postgresql", reason="the multi-machine shape is PostgreSQL + Redis (SQLite is one machine's file)"
)

REQUEST = """mutation($n: [String!], $p: RenderParamsInput) {
  requestRender(kind: FEATURE_VIS, neurons: $n, params: $p) { id status } }"""
JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status attempts progress artifact { sha256 url } } }"
NEIGHBORS = "query($k: String!) { neuron(key: $k) { key inputs(first: 5) { edges { weight node { key } } } } }"
FAST = {"KB_RENDER_LEASE_S": "4", "KB_RENDER_SWEEP_S": "1", "KB_RENDER_DEVICE": "cpu"}


def _worker(env: dict, folder: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "kb"
    with open(folder.parent / f"{folder.name}.log", "a") as log:
        return subprocess.Popen(
            [str(exe), "worker", "--loglevel", "warning"],
            env={**os.environ, **env, **FAST, "KB_DATA_DIR": str(folder)},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _jobs(base: str, ids: list[int]) -> list[dict]:
    return httpx.post(f"{base}/graphql", json={"query": JOBS, "variables": {"ids": ids}}, timeout=60).json()["data"][
        "renderJobs"
    ]


def _until(base: str, ids: list[int], done, timeout: float = 300) -> list[dict]:
    return poll(lambda: _jobs(base, ids), done, timeout, f"render jobs {ids} (their rows, through {base})", 0.5)


def test_two_servers_and_workers_share_nothing_but_postgresql_and_redis(
    db_url, engine, inceptionv1, accounts, tmp_path
):
    env = {"KB_DATABASE_URL": db_url, "KB_QUERY_RATE_LIMIT": "", **FAST}
    folders = {name: tmp_path / name for name in ("a", "b", "w1", "w2")}
    for f in folders.values():
        f.mkdir()
    editor = {"authorization": f"Bearer {accounts['editor']['token']}"}
    workers: list[subprocess.Popen] = []
    with (
        kb_serve({**env, "KB_DATA_DIR": str(folders["a"])}, "--no-render-worker", timeout=120) as a,
        kb_serve({**env, "KB_DATA_DIR": str(folders["b"])}, "--no-render-worker", timeout=120) as b,
    ):
        try:
            # B answers from its own graph file, built from the database in its own folder
            ask = {"query": NEIGHBORS, "variables": {"k": "InceptionV1 4c:447"}}
            answers = [httpx.post(f"{s}/graphql", json=ask, timeout=120).json()["data"]["neuron"] for s in (a, b)]
            assert answers[0] == answers[1] and len(answers[1]["inputs"]["edges"]) == 5
            assert list((folders["b"] / "graphs").glob("inceptionv1@*.kbgraph")), list(folders["b"].rglob("*"))

            # a claim made through A reaches a live stream open on B
            events: queue.Queue = queue.Queue()
            ready, stop = threading.Event(), threading.Event()
            listener = threading.Thread(target=_listen, args=(b, events, ready, stop), daemon=True)
            listener.start()
            assert ready.wait(30)
            made = httpx.post(
                f"{a}/graphql",
                headers=editor,
                timeout=60,
                json={
                    "query": "mutation($i: ClaimInput!) { createClaim(input: $i) { key } }",
                    "variables": {"i": {"label": "seen on B", "kind": "FEATURE", "subjects": ["InceptionV1 4c:446"]}},
                },
            ).json()["data"]["createClaim"]["key"]
            got = events.get(timeout=30)
            stop.set()
            assert got["subject"].startswith(made) and got["kind"] == "CLAIM", got

            # a render asked through A: its worker killed mid-render, another finishes it, once; B serves the image
            workers.append(_worker(env, folders["w1"]))
            params = {"size": 48, "steps": 400, "upsample": 0, "seed": 23}
            asked = httpx.post(
                f"{a}/graphql",
                headers=editor,
                timeout=60,
                json={"query": REQUEST, "variables": {"n": ["InceptionV1 4a:7"], "p": params}},
            ).json()
            [job] = asked["data"]["requestRender"]
            _until(a, [job["id"]], lambda js: js[0]["status"] == "RUNNING" and js[0]["progress"] > 0)
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait(timeout=30)
            workers.append(_worker(env, folders["w2"]))
            [done] = _until(a, [job["id"]], lambda js: js[0]["status"] in ("DONE", "FAILED"))
            assert done["status"] == "DONE" and done["attempts"] >= 2, done
            image = httpx.get(f"{b}/artifacts/{done['artifact']['sha256']}.png", timeout=60)
        finally:
            for w in workers:
                if w.poll() is None:
                    os.killpg(w.pid, signal.SIGTERM)
                    w.wait(timeout=60)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert hashlib.sha256(image.content).hexdigest() == done["artifact"]["sha256"]
    with engine.connect() as conn:  # once: one job row, one artifact
        rows = conn.execute(
            sa.text(
                "SELECT count(*) FROM render_job WHERE layer_key = 'mixed4a' AND unit = 7 AND kind = 'FEATURE_VIS' "
                "AND params->>'seed' = '23'"
            )
        ).scalar_one()
        artifacts = conn.execute(
            sa.text("SELECT count(*) FROM artifact WHERE sha256 = :s"), {"s": done["artifact"]["sha256"]}
        ).scalar_one()
    assert rows == 1 and artifacts == 1
    for name in ("a", "b", "w1", "w2"):  # nobody wrote a picture into its own folder: they live in the database
        assert not list(folders[name].rglob("*.png")), name


def _listen(base: str, out: queue.Queue, ready: threading.Event, stop: threading.Event) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(30, read=60)) as client,
        client.stream("GET", f"{base}/events", params={"kind": "claim"}) as response,
    ):
        ready.set()
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data: "):
                out.put(json.loads(line[6:]))
