"""Render workers: the lucent adapter, job rows, a real Celery worker on real Redis, and a worker killed
in the middle of a render."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
import sqlalchemy as sa
import torch
from conftest import as_user, gql, sql_statements
from stores import store_for
from waits import poll

from kb.graph import zoo
from kb.render import feature_vis as FV
from kb.render import lucent_adapter as A
from kb.render import model_cache as M
from kb.render.storage_files import LocalStorage
from kb.render.worker_device import cpu_has_bf16

REQUEST = """mutation($kind: RenderKind!, $n: [String!], $p: RenderParamsInput) {
    requestRender(kind: $kind, neurons: $n, params: $p) { id status attempts kind neuron { key } } }"""
JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status attempts progress error artifact { url sha256 } } }"
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}


def hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_adapter_removes_hooks_and_is_seeded():
    arch = zoo.get("torchvision:googlenet")
    torch.manual_seed(0)
    model = arch.build().eval()
    before = hooks(model)
    A.plain_render_vis(model, "inception3a", 1, size=32, steps=2)
    assert hooks(model) == before  # lucent's render_vis leaves one per module; the adapter removes them
    model = M.prepare(model, "cpu")
    a = FV.render_units(model, "inception3a", [1, 2], size=32, steps=3, upsample=0)
    assert hooks(model) == before
    b = FV.render_units(model, "inception3a", [1, 2], size=32, steps=3, upsample=0)
    assert a[0].shape == (32, 32, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # same seed, same image
    c = FV.render_units(model, "inception3a", [1, 2], size=32, steps=3, upsample=0, seed=1)
    assert not np.array_equal(a[0], c[0])
    with pytest.raises(KeyError):
        FV.render_units(model, "no.such.module", [1], size=32, steps=1)
    assert hooks(model) == before


def test_requests_are_rows_and_repeat_requests_reuse_them(api, accounts):
    ed = accounts["editor"]["token"]
    first = as_user(
        api,
        ed,
        REQUEST,
        {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:1", "InceptionV1 3a:2"], "p": {**SMALL, "seed": 7}},
    )["data"]["requestRender"]
    again = as_user(
        api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["inceptionv1/mixed3a:2"], "p": {**SMALL, "seed": 7}}
    )["data"]["requestRender"]
    assert again[0]["id"] == first[1]["id"] and first[0]["neuron"]["key"] == "inceptionv1/mixed3a:1"
    other = as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:2"], "p": {**SMALL, "seed": 8}})[
        "data"
    ]["requestRender"]
    assert other[0]["id"] != first[1]["id"]
    for bad, code in (
        ({"size": 4}, "BAD_INPUT"),
        ({"steps": 0}, "BAD_INPUT"),
        ({"steps": 100000}, "BAD_INPUT"),
        ({"batch": 0}, "BAD_INPUT"),
        ({"batch": 5000}, "BAD_INPUT"),
        ({"parameterization": "cppn"}, "BAD_INPUT"),
    ):
        err = as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:1"], "p": bad})["errors"][0]
        assert err["extensions"]["code"] == code
    err = as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 3z:1"]})["errors"][0]
    assert err["extensions"]["code"] == "NOT_FOUND"
    err = as_user(api, None, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:1"]})["errors"][0]
    assert err["extensions"]["code"] == "UNAUTHENTICATED"


def _worker(db_url, storage, **env):
    exe = Path(sys.executable).parent / "kb"
    full = {
        **os.environ,
        "KB_DATABASE_URL": db_url,
        "KB_STORAGE_DIR": str(storage),
        "KB_RENDER_DEVICE": "cpu",
        **{k: str(v) for k, v in env.items()},
    }
    with open(Path(os.environ.get("TMPDIR", "/tmp")) / f"kb-test-worker-{os.getpid()}.log", "a") as log:
        return subprocess.Popen(  # the child keeps its own copy of the log's descriptor
            [str(exe), "worker", "--loglevel", "warning"],
            env=full,
            start_new_session=True,
            stdout=log,
            stderr=log,
            text=True,
        )


def _wait(api, ids, until, timeout=180):
    return poll(lambda: gql(api, JOBS, {"ids": ids})["data"]["renderJobs"], until, timeout, f"render jobs {ids}", 0.5)


@pytest.fixture
def clean_queue():
    r = redis.Redis.from_url(os.environ["KB_BROKER_URL"])
    r.flushdb()
    yield
    r.flushdb()


def test_worker_renders_and_the_api_serves(api, accounts, db_url, clean_queue, engine):
    from kb.settings import get_settings

    storage = get_settings().artifacts_dir
    worker = _worker(db_url, storage)
    try:
        ed = accounts["editor"]["token"]
        asked = as_user(
            api,
            ed,
            REQUEST,
            {"kind": "FEATURE_VIS", "n": [f"InceptionV1 3b:{i}" for i in range(3)], "p": {**SMALL, "seed": 3}},
        )["data"]["requestRender"]
        weights = as_user(api, ed, REQUEST, {"kind": "WEIGHTS", "n": ["InceptionV1 3b:0"]})["data"]["requestRender"]
        ids = [j["id"] for j in asked + weights]
        jobs = _wait(api, ids, lambda js: all(j["status"] in ("DONE", "FAILED") for j in js))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert all(j["status"] == "DONE" for j in jobs), jobs
    url = jobs[0]["artifact"]["url"]
    r = api.get(url.split("kb.example.org")[1])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "immutable" in r.headers["cache-control"] and r.content[:4] == b"\x89PNG"
    viz = gql(api, '{ neuron(key: "InceptionV1 3b:0") { visualizations { kind artifact { url width versions } } } }')
    made = {v["kind"]: json.loads(v["artifact"]["versions"]) for v in viz["data"]["neuron"]["visualizations"]}
    assert set(made) == {"FEATURE_VIS", "WEIGHTS"}
    assert made["FEATURE_VIS"]["torch"] == torch.__version__ and made["FEATURE_VIS"]["device"] == "cpu"
    assert made["FEATURE_VIS"]["bf16"] is cpu_has_bf16() and made["FEATURE_VIS"]["lucent"]  # bf16 where it computes it
    grid = gql(api, '{ layer(key: "InceptionV1 3b") { visualizations(kind: FEATURE_VIS) { index artifact { url } } } }')
    rendered = [(v["index"], v["artifact"]["url"]) for v in grid["data"]["layer"]["visualizations"]]
    assert {0, 1, 2} <= {i for i, _ in rendered} and (0, url) in rendered
    path = url.split("kb.example.org")[1]
    assert f'src="{path}"' in api.get("/n/inceptionv1/mixed3b").text  # the layer page shows the image
    again = as_user(
        api,
        accounts["editor"]["token"],
        REQUEST,
        {"kind": "FEATURE_VIS", "n": ["InceptionV1 3b:1"], "p": {**SMALL, "seed": 3}},
    )["data"]["requestRender"]
    assert again[0]["id"] == ids[1] and again[0]["status"] == "DONE" and again[0]["attempts"] == 1


def test_killed_worker_loses_nothing(api, accounts, db_url, clean_queue, engine):
    """SIGKILL a worker in the middle of a render; a new worker finishes the job: one row, one artifact."""
    from kb.settings import get_settings

    storage = get_settings().artifacts_dir
    fast = {"KB_RENDER_LEASE_S": 4, "KB_RENDER_SWEEP_S": 1}
    first = _worker(db_url, storage, **fast)
    ed = accounts["editor"]["token"]
    params = {"size": 48, "steps": 400, "upsample": 0, "seed": 11}
    job = as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 4a:5"], "p": params})["data"][
        "requestRender"
    ][0]
    try:
        _wait(api, [job["id"]], lambda js: js[0]["status"] == "RUNNING" and js[0]["progress"] > 0)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed = gql(api, JOBS, {"ids": [job["id"]]})["data"]["renderJobs"][0]
        assert killed["status"] == "RUNNING" and killed["artifact"] is None
        second = _worker(db_url, storage, **fast)
        done = _wait(api, [job["id"]], lambda js: js[0]["status"] in ("DONE", "FAILED"), timeout=300)[0]
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
    # Two attempts at least (the killed one and the one that finished); under heavy CPU load a slow heartbeat
    # can let the lease lapse and the job be claimed once more: still one row and one artifact, checked below.
    assert done["status"] == "DONE" and done["attempts"] >= 2, done
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT count(*) FROM render_job WHERE layer_key = 'mixed4a' AND unit = 5 "
                "AND kind = 'FEATURE_VIS' AND params->>'seed' = '11'"
                if engine.dialect.name == "postgresql"
                else "SELECT count(*) FROM render_job WHERE layer_key = 'mixed4a' "
                "AND unit = 5 AND kind = 'FEATURE_VIS' AND json_extract(params, '$.seed') = 11"
            )
        ).scalar_one()
        artifacts = conn.execute(
            sa.text("SELECT count(*) FROM artifact WHERE sha256 = :s"), {"s": done["artifact"]["sha256"]}
        ).scalar_one()
    assert rows == 1 and artifacts == 1
    sha = done["artifact"]["sha256"]
    store = store_for(engine)  # the worker's (the default for the database: files on SQLite, else the database)
    assert hashlib.sha256(store.read(sha, ".png")).hexdigest() == sha
    if isinstance(store, LocalStorage):  # one file, written atomically: no temporary file left
        assert len(list(Path(storage).rglob(f"{sha}*"))) == 1 and not list(Path(storage).rglob(".tmp-*"))


def test_dataset_examples(api, accounts, db_url, clean_queue, tmp_path):
    from PIL import Image

    from kb.settings import get_settings

    good, bad = tmp_path / "images", tmp_path / "unreadable"
    good.mkdir()
    bad.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (96 + 8 * i, 128, 3), dtype=np.uint8)).save(good / f"{i:02d}.png")
    (good / "broken.jpg").write_bytes(b"not an image")
    (bad / "broken.png").write_bytes(b"\x89PNG but not really")
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": db_url}
    for name, folder in ((f"tiny-{os.getpid()}", good), (f"junk-{os.getpid()}", bad)):
        r = subprocess.run([str(exe), "dataset", "add", name, str(folder)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [str(exe), "dataset", "add", "x", str(tmp_path / "nowhere")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 1 and "is not a folder" in r.stderr
    worker = _worker(db_url, get_settings().artifacts_dir)
    try:
        ed = accounts["editor"]["token"]
        ok = as_user(
            api,
            ed,
            REQUEST,
            {
                "kind": "DATASET_EXAMPLES",
                "n": ["InceptionV1 3a:0", "InceptionV1 3a:5"],
                "p": {"dataset": f"tiny-{os.getpid()}", "topK": 4},
            },
        )["data"]["requestRender"]
        junk = as_user(
            api,
            ed,
            REQUEST,
            {"kind": "DATASET_EXAMPLES", "n": ["InceptionV1 3a:0"], "p": {"dataset": f"junk-{os.getpid()}", "topK": 4}},
        )["data"]["requestRender"]
        jobs = _wait(api, [j["id"] for j in ok + junk], lambda js: all(j["status"] in ("DONE", "FAILED") for j in js))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [j["status"] for j in jobs] == ["DONE", "DONE", "FAILED"], jobs
    assert "no readable images" in jobs[2]["error"] and jobs[2]["attempts"] == 1
    missing = as_user(
        api,
        accounts["editor"]["token"],
        REQUEST,
        {"kind": "DATASET_EXAMPLES", "n": ["InceptionV1 3a:0"], "p": {"dataset": "nope"}},
    )["errors"][0]
    assert missing["extensions"]["code"] == "NOT_FOUND"


def test_a_job_that_keeps_failing_ends_failed(api, accounts, db_url, clean_queue, tmp_path):
    """A transient error (storage not writable) is retried with backoff, then the job ends FAILED with it."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("storage cannot live under a file")
    worker = _worker(db_url, not_a_folder / "artifacts", KB_RENDER_RETRY_BASE_S=0.2, KB_ARTIFACT_STORE="files")
    try:
        job = as_user(
            api,
            accounts["editor"]["token"],
            REQUEST,
            {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:3"], "p": {**SMALL, "seed": 1234}},
        )["data"]["requestRender"][0]
        done = _wait(api, [job["id"]], lambda js: js[0]["status"] in ("DONE", "FAILED"))[0]
        survived = worker.poll() is None  # three failed renders did not take the worker down
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert survived
    assert done["status"] == "FAILED" and done["attempts"] == 3, done
    assert "NotADirectoryError" in done["error"] or "FileExistsError" in done["error"], done["error"]


def test_visualizations_and_artifacts_are_batched(api, engine):
    """30 neurons' visualizations: one SQL statement, not one per neuron (a DataLoader)."""
    q = """query($k: [String!]!) { neurons(keys: $k) { key visualizations { kind artifact { url } } } }"""
    keys = [f"inceptionv1/mixed3b:{i}" for i in range(30)]
    gql(api, q, {"k": keys[:1]})  # warm the catalog
    with sql_statements(engine) as statements:
        data = gql(api, q, {"k": keys})["data"]["neurons"]
    assert len(data) == 30 and len(statements) == 1, statements


RABBIT = os.environ.get("KB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbit_answers() -> bool:
    import socket
    from urllib.parse import urlparse

    u = urlparse(RABBIT)
    try:
        socket.create_connection((u.hostname, u.port or 5672), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbit_answers(), reason="no RabbitMQ here (bin/services starts it where installed)")
def test_rabbitmq_broker_works_too(accounts, db_url, inceptionv1, tmp_path):
    """The production topology on RabbitMQ instead of Redis: `kb serve` and `kb worker`, separate processes."""
    import httpx
    from kombu import Connection
    from servers import kb_serve

    with Connection(RABBIT) as conn:  # messages left by an earlier run name jobs of another database
        for queue in ("render",):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:
                conn.close()
                conn.connect()
    storage = tmp_path / "artifacts"
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": RABBIT, "KB_STORAGE_DIR": str(storage)}
    worker = _worker(db_url, storage, KB_BROKER_URL=RABBIT)
    headers = {"authorization": f"Bearer {accounts['editor']['token']}"}
    try:
        with kb_serve(env, "--no-render-worker") as base:
            asked = httpx.post(
                f"{base}/graphql",
                headers=headers,
                timeout=60,
                json={
                    "query": REQUEST,
                    "variables": {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:5"], "p": {**SMALL, "seed": 11}},
                },
            ).json()
            assert "errors" not in asked, asked
            ids = [j["id"] for j in asked["data"]["requestRender"]]
            jobs = poll(
                lambda: httpx.post(
                    f"{base}/graphql", timeout=60, json={"query": JOBS, "variables": {"ids": ids}}
                ).json()["data"]["renderJobs"],
                lambda jobs: jobs[0]["status"] in ("DONE", "FAILED"),
                180,
                f"render job {ids} to end (a worker over RabbitMQ)",
                0.5,
            )
            assert jobs[0]["status"] == "DONE", jobs
            assert httpx.get(jobs[0]["artifact"]["url"], timeout=30).content[:4] == b"\x89PNG"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
