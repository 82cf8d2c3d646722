"""Render jobs under faults: a job that kills its worker ends FAILED after the attempts cap, a job whose broker
message is lost (after a retry, after a FAILED job is asked for again, in the embedded setup) still finishes,
workers log each job, and progress moves during the optimisation."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from conftest import as_user, gql
from servers import kb_serve
from waits import poll

from kb.render import jobs
from kb.render.keepalive import KeepAlive

REQUEST = """mutation($kind: RenderKind!, $n: [String!], $p: RenderParamsInput) {
    requestRender(kind: $kind, neurons: $n, params: $p) { id status attempts } }"""
JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status attempts progress error artifact { url } } }"
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}
FAST = {"KB_RENDER_LEASE_S": 5, "KB_RENDER_SWEEP_S": 1, "KB_RENDER_REQUEUE_IDLE_S": 1}


def _worker(db_url, storage, log: Path, **env):
    exe = Path(sys.executable).parent / "kb"
    full = {
        **os.environ,
        "KB_DATABASE_URL": db_url,
        "KB_STORAGE_DIR": str(storage),
        "KB_RENDER_DEVICE": "cpu",
        **{k: str(v) for k, v in env.items()},
    }
    with open(log, "a") as out:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(
            [str(exe), "worker", "--loglevel", "warning"], env=full, start_new_session=True, stdout=out, stderr=out
        )


def _stop(proc, sig=signal.SIGTERM):
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)


def _progress(engine, job_id: int) -> float:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT progress FROM render_job WHERE id = :i"), {"i": job_id}).scalar_one()


def _wait(api, ids, until, timeout=240):
    return poll(lambda: gql(api, JOBS, {"ids": ids})["data"]["renderJobs"], until, timeout, f"render jobs {ids}", 0.3)


@pytest.fixture
def queue():
    r = redis.Redis.from_url(os.environ["KB_BROKER_URL"])
    r.flushdb()
    yield r
    r.flushdb()


def test_a_job_that_kills_its_worker_ends_failed_after_the_cap(api, accounts, db_url, queue, tmp_path):
    """Each attempt's worker is killed (SIGKILL, as the out-of-memory killer does) mid-render: after the third
    the job ends FAILED with "worker lost 3 times" and no fourth worker starts it."""
    log = tmp_path / "worker.log"
    params = {"size": 48, "steps": 4000, "upsample": 0, "seed": 5150}
    job = as_user(
        api, accounts["editor"]["token"], REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 4a:9"], "p": params}
    )["data"]["requestRender"][0]
    workers = []
    try:
        for attempt in (1, 2, 3):
            workers.append(_worker(db_url, tmp_path / "artifacts", log, **FAST))
            _wait(api, [job["id"]], lambda js, a=attempt: js[0]["status"] == "RUNNING" and js[0]["attempts"] >= a)
            _stop(workers[-1], signal.SIGKILL)
        workers.append(_worker(db_url, tmp_path / "artifacts", log, **FAST))
        done = _wait(api, [job["id"]], lambda js: js[0]["status"] in ("DONE", "FAILED"), timeout=120)[0]
    finally:
        for w in workers:
            _stop(w)
    assert done["status"] == "FAILED" and done["attempts"] == 3, done
    assert done["error"].startswith("worker lost 3 times"), done
    text = log.read_text()
    assert f"received jobs [{job['id']}]" in text and f"job {job['id']} started" in text, text[-2000:]


def _lose_messages(queue):
    """Every message in the broker is gone (a broker restart without persistence, a purge by hand)."""
    queue.flushdb()
    assert not queue.keys("render*")


def test_lost_messages_after_a_retry_and_after_a_reset_are_sent_again(api, accounts, db_url, engine, queue, tmp_path):
    ed = accounts["editor"]["token"]
    retried, failed = (
        as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": [f"InceptionV1 3a:{u}"], "p": {**SMALL, "seed": 606}})[
            "data"
        ]["requestRender"][0]["id"]
        for u in (20, 21)
    )
    with engine.begin() as conn:  # both were started once and failed: one is due again, one ended FAILED
        started = jobs.start(conn, [retried, failed], "a lost worker", 300)
        assert len(started) == 2
        assert jobs.fail(conn, retried, "OSError: disk full", retryable=True, retry_in_s=0.5)
        assert not jobs.fail(conn, failed, "ValueError: bad", retryable=False)
    asked = as_user(api, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:21"], "p": {**SMALL, "seed": 606}})
    assert asked["data"]["requestRender"][0] == {"id": failed, "status": "QUEUED", "attempts": 0}
    _lose_messages(queue)  # neither the retry's message nor the reset's reaches a worker
    log = tmp_path / "worker.log"
    worker = _worker(db_url, tmp_path / "artifacts", log, **FAST)
    try:
        found = _wait(api, [retried, failed], lambda js: all(j["status"] in ("DONE", "FAILED") for j in js))
    finally:
        _stop(worker)
    assert [j["status"] for j in found] == ["DONE", "DONE"], found
    assert found[0]["attempts"] == 2 and found[1]["attempts"] == 1, found
    text = log.read_text()
    assert "re-sending" in text and f"job {retried} done" in text and f"job {failed} done" in text, text[-2000:]


def test_progress_is_written_every_five_percent(engine, api, accounts):
    job = as_user(
        api,
        accounts["editor"]["token"],
        REQUEST,
        {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:30"], "p": {**SMALL, "seed": 4242}},
    )["data"]["requestRender"][0]
    with engine.begin() as conn:
        assert jobs.start(conn, [job["id"]], "here", 3600)
    seen = set()
    with KeepAlive(engine, [job["id"]], lease_s=3600) as alive:  # its lease renewal alone: once an hour
        for step in range(1, 201):
            alive.progress(step, 200)
            if step % 10 == 0:  # every 5%: written without waiting for the lease renewal
                p = poll(
                    lambda: _progress(engine, job["id"]),
                    lambda p, step=step: p >= step / 200 * 0.99 - 1e-9,
                    30,
                    f"step {step}'s progress in the job's row (KeepAlive's thread writes it)",
                    0.02,
                )
                seen.add(round(p, 4))
    assert len(seen) >= 19, sorted(seen)


def test_embedded_setup_resends_a_lost_message_within_60_seconds(db_url, engine, accounts, inceptionv1, tmp_path):
    """A job whose message never reached the embedded broker (the row committed, the send lost) is sent again
    by the local worker's sweeper: done well within 60 s of `kb serve` answering, plus the render itself."""
    from kb.db.catalog import load_catalog
    from kb.render.jobs import Unit
    from kb.render.params import RenderParams

    with engine.begin() as conn:
        model = load_catalog(conn).model("inceptionv1")
        p = RenderParams(**{**SMALL, "seed": 777})
        ids, to_send = jobs.request(
            conn, [Unit("inceptionv1", model.sha256, "mixed3a", 31)], "FEATURE_VIS", p.relevant("FEATURE_VIS")
        )
    assert to_send == ids  # a new job, and its message is never sent
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(tmp_path / "artifacts"),
        "KB_RENDER_DEVICE": "cpu",
    }
    with kb_serve(env) as base:
        ready = time.monotonic()
        q = "query($i: [Int!]!) { renderJobs(ids: $i) { status attempts } }"
        job = poll(
            lambda: httpx.post(f"{base}/graphql", json={"query": q, "variables": {"i": ids}}, timeout=60).json()[
                "data"
            ]["renderJobs"][0],
            lambda job: job["status"] in ("DONE", "FAILED"),
            240,  # the sweeper's 60 s, and the render on a loaded CPU, with room
            f"job {ids} (its message lost) to be re-sent by the sweeper and end",
            0.5,
        )
        took = time.monotonic() - ready
    assert job == {"status": "DONE", "attempts": 1}, (job, took)  # re-sent once, rendered once
    print(f"\nembedded: a lost message was re-sent and its job done {took:.1f} s after kb serve answered")
