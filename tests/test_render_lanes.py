"""Render lanes, cancel and the embedded broker, on both setups: the embedded default (`kb serve` and its own
worker on the SQLite broker) and Redis with a real `kb worker`.

- lanes: while one worker renders a bulk layer, a one-unit interactive job finishes before the layer's remaining
  device batches (an order of completion, read from the job rows, not a time);
- cancel: a running job stops at its next progress point and ends CANCELLED with no artifact; queued ones end
  CANCELLED at once; only the requester and moderators may cancel (API and `kb render cancel`);
- the embedded broker: two processes sending the first message on a fresh data folder at once lose nothing;
  requestRender answers the jobs it saved even when the broker does not take them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from conftest import as_user
from servers import kb_serve
from waits import poll

REQUEST = """mutation($kind: RenderKind!, $n: [String!], $layer: String, $p: RenderParamsInput) {
    requestRender(kind: $kind, neurons: $n, layer: $layer, params: $p) { id status lane } }"""
CANCEL = "mutation($ids: [Int!]!) { cancelRenders(ids: $ids) { id status lane artifact { url } } }"
JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status lane progress artifact { url } } }"
TINY = {"size": 32, "upsample": 0, "transforms": "none"}
DEVICE_BATCH = 2  # units per optimisation in these workers: a 64-unit layer is 32 device batches
HERE = Path(__file__).parent


class Setup:
    """Posts GraphQL to the server of one setup (an in-process client, or a `kb serve` over HTTP)."""

    def __init__(self, name, post, log: Path):
        self.name, self._post, self.log = name, post, log

    def gql(self, token, query, variables=None) -> dict:
        return self._post(token, query, variables or {})

    def ask(self, token, variables) -> list[dict]:
        answer = self.gql(token, REQUEST, {"kind": "FEATURE_VIS", **variables})
        assert "errors" not in answer, answer
        return answer["data"]["requestRender"]

    def jobs(self, ids) -> list[dict]:
        return self.gql(None, JOBS, {"ids": ids})["data"]["renderJobs"]

    def wait(self, ids, until, timeout=240) -> list[dict]:
        try:  # the jobs' rows are the signal
            return poll(lambda: self.jobs(ids), until, timeout, f"render jobs {ids}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log.read_text()[-3000:] if self.log.exists() else ''}") from None


def _worker(db_url, storage, log: Path, **env):
    exe = Path(sys.executable).parent / "kb"
    full = {**os.environ, "KB_DATABASE_URL": db_url, "KB_STORAGE_DIR": str(storage), "KB_RENDER_DEVICE": "cpu"}
    with open(log, "a") as out:
        return subprocess.Popen(
            [str(exe), "worker", "--loglevel", "warning"],
            env={**full, **{k: str(v) for k, v in env.items()}},
            start_new_session=True,
            stdout=out,
            stderr=out,
        )


@contextmanager
def _redis_setup(api, db_url, tmp_path):
    queue = redis.Redis.from_url(os.environ["KB_BROKER_URL"])
    queue.flushdb()
    log = tmp_path / "worker.log"
    worker = _worker(db_url, tmp_path / "artifacts", log, KB_RENDER_DEVICE_BATCH=DEVICE_BATCH, KB_RENDER_SWEEP_S=2)
    try:
        yield Setup("redis", lambda token, q, v: as_user(api, token, q, v), log)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        queue.flushdb()


@contextmanager
def _embedded_setup(db_url, tmp_path):
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(tmp_path / "artifacts"),
        "KB_RENDER_DEVICE": "cpu",
        "KB_RENDER_DEVICE_BATCH": str(DEVICE_BATCH),
        "KB_RENDER_SWEEP_S": "2",
    }
    log = tmp_path / "serve.log"
    with kb_serve(env, log=log) as base, httpx.Client(base_url=base, timeout=60) as client:

        def post(token, query, variables):
            headers = {"authorization": f"Bearer {token}"} if token else {}
            r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()

        yield Setup("embedded", post, log)


@pytest.fixture(params=["embedded", "redis"])
def setup(request, api, db_url, tmp_path):
    with _embedded_setup(db_url, tmp_path) if request.param == "embedded" else _redis_setup(api, db_url, tmp_path) as s:
        yield s


def _finished(engine, ids) -> dict[int, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, status, finished_at, artifact_id FROM render_job WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
        return {r.id: (r.status, r.finished_at, r.artifact_id) for r in rows}


def test_an_interactive_job_passes_a_running_bulk_layer_which_can_be_cancelled(setup, accounts, engine):
    """One worker busy on a 64-unit layer (bulk, 32 device batches): a one-unit job asked for meanwhile (another
    account, interactive) finishes before all but the device batch running when it came. Then the layer is
    cancelled while one of its batches runs: every job not DONE ends CANCELLED, none with an artifact."""
    seed = int(time.time() * 1000) % 2**31  # fresh jobs on every run
    ed, ed2 = accounts["editor"]["token"], accounts["editor2"]["token"]
    bulk = setup.ask(ed, {"layer": "InceptionV1 conv2d0", "p": {**TINY, "steps": 120, "seed": seed}})
    ids = [j["id"] for j in bulk]
    assert len(ids) == 64 and {j["lane"] for j in bulk} == {"BULK"}
    setup.wait(ids, lambda js: sum(j["status"] == "DONE" for j in js) >= DEVICE_BATCH)
    before = {j["id"] for j in setup.jobs(ids) if j["status"] != "DONE"}
    assert len(before) >= 10 * DEVICE_BATCH, f"the layer was nearly done before the test could ask: {len(before)}"
    (one,) = setup.ask(ed2, {"n": ["InceptionV1 conv2d0:3"], "p": {**TINY, "steps": 5, "seed": seed}})
    assert one["lane"] == "INTERACTIVE"
    setup.wait([one["id"]], lambda js: js[0]["status"] == "DONE", timeout=180)
    ended = _finished(engine, [*before, one["id"]])
    passed = sorted(i for i in before if ended[i][0] == "DONE" and ended[i][1] < ended[one["id"]][1])
    # the batch running when it was asked for, and one started just before its row committed: never more
    assert len(passed) <= 2 * DEVICE_BATCH, (len(passed), len(before))

    # the layer goes on; cancel it while one of its batches runs (the editor who asked may)
    setup.wait(ids, lambda js: any(j["status"] == "RUNNING" and j["progress"] > 0 for j in js))
    answer = setup.gql(ed, CANCEL, {"ids": ids})
    assert "errors" not in answer, answer
    assert {j["status"] for j in answer["data"]["cancelRenders"]} <= {"DONE", "CANCELLED"}
    final = setup.wait(ids, lambda js: not any(j["status"] in ("QUEUED", "RUNNING") for j in js), timeout=120)
    cancelled = [j for j in final if j["status"] == "CANCELLED"]
    assert len(cancelled) >= 64 - len(passed) - 10 * DEVICE_BATCH, [j["status"] for j in final]
    assert all(j["artifact"] is None for j in cancelled)
    rows = _finished(engine, ids)
    assert all(rows[j["id"]][2] is None for j in cancelled)  # no artifact row attached, ever


def test_a_running_job_cancelled_stops_at_its_next_progress_point(setup, accounts, engine):
    """A long one-unit render is cancelled while it runs: it ends CANCELLED without an artifact, and the worker is
    free again well before the render's remaining steps could have run (a job asked for next finishes)."""
    seed = int(time.time() * 1000) % 2**31
    ed = accounts["editor"]["token"]
    (long,) = setup.ask(ed, {"n": ["InceptionV1 mixed3a:7"], "p": {**TINY, "steps": 800, "seed": seed}})
    setup.wait([long["id"]], lambda js: js[0]["status"] == "RUNNING" and js[0]["progress"] > 0)
    answer = setup.gql(ed, CANCEL, {"ids": [long["id"]]})["data"]["cancelRenders"]
    assert answer == [{"id": long["id"], "status": "CANCELLED", "lane": "INTERACTIVE", "artifact": None}]
    (next_one,) = setup.ask(ed, {"n": ["InceptionV1 mixed3a:8"], "p": {**TINY, "steps": 3, "seed": seed}})
    done = setup.wait([long["id"], next_one["id"]], lambda js: js[1]["status"] == "DONE", timeout=180)
    assert done[0]["status"] == "CANCELLED" and done[0]["artifact"] is None, done
    with engine.connect() as conn:
        progress, artifact_id = conn.execute(
            sa.text("SELECT progress, artifact_id FROM render_job WHERE id = :i"), {"i": long["id"]}
        ).one()
    assert artifact_id is None and progress < 0.9, progress
    assert f"jobs [{long['id']}] cancelled: stopped" in setup.log.read_text()  # stopped, not run to the end


def test_who_may_cancel(api, accounts, engine, kb_env):
    """The requester and moderators may cancel; another editor and a viewer get FORBIDDEN and cancel nothing; the
    operator's `kb render cancel` may cancel any. A cancelled job asked for again is queued afresh."""
    from typer.testing import CliRunner

    from kb.cli.main import app

    seed = int(time.time() * 1000) % 2**31
    ed = accounts["editor"]["token"]
    ids = [
        j["id"]
        for j in as_user(
            api,
            ed,
            REQUEST,
            {
                "kind": "FEATURE_VIS",
                "n": ["InceptionV1 3b:1", "InceptionV1 3b:2"],
                "p": {**TINY, "steps": 3, "seed": seed},
            },
        )["data"]["requestRender"]
    ]
    for who in ("editor2", "viewer"):
        refused = as_user(api, accounts[who]["token"], CANCEL, {"ids": ids})
        assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "FORBIDDEN", refused
    missing = as_user(api, ed, CANCEL, {"ids": [ids[0], 2**31 - 1]})
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND", missing
    with engine.connect() as conn:
        states = conn.execute(sa.text("SELECT status FROM render_job WHERE id IN (:a, :b)"), {"a": ids[0], "b": ids[1]})
        assert {s for (s,) in states} <= {"QUEUED", "RUNNING", "DONE"}  # nothing was cancelled by a refusal
    mine = as_user(api, ed, CANCEL, {"ids": [ids[0]]})["data"]["cancelRenders"]
    assert mine == [{"id": ids[0], "status": "CANCELLED", "lane": "INTERACTIVE", "artifact": None}]  # no worker runs
    r = CliRunner().invoke(app, ["render", "cancel", str(ids[1])])
    assert r.exit_code == 0, r.output
    assert f"job {ids[1]} " in r.output
    r = CliRunner().invoke(app, ["render", "cancel", "x1"])
    assert r.exit_code != 0 and "a render job id is a number" in r.output
    by_mod = as_user(api, accounts["moderator"]["token"], CANCEL, {"ids": ids})["data"]["cancelRenders"]
    assert {j["status"] for j in by_mod} <= {"CANCELLED", "DONE"}
    if by_mod[0]["status"] == "CANCELLED":
        again = as_user(
            api,
            ed,
            REQUEST,
            {"kind": "FEATURE_VIS", "n": ["InceptionV1 3b:1"], "p": {**TINY, "steps": 3, "seed": seed}},
        )["data"]["requestRender"]
        assert again == [{"id": ids[0], "status": "QUEUED", "lane": "INTERACTIVE"}]
        as_user(api, ed, CANCEL, {"ids": [ids[0]]})  # leave nothing queued for later tests' workers


def test_two_processes_send_the_first_message_to_a_fresh_embedded_broker(tmp_path):
    """20 rounds, each on a fresh data folder: two processes send their first message at the same moment; both
    arrive every time (before: the loser of kombu's CREATE TABLE / queue INSERT race lost its message)."""
    env = {**os.environ, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, str(HERE / "broker_race.py"), str(tmp_path / "rounds"), "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    rounds = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rounds) == 20, out.stdout + out.stderr[-3000:]
    lost = [r for r in rounds if r["failed"] or r["messages"] != 2]
    assert not lost, (lost, out.stderr[-3000:])


def test_request_render_answers_the_jobs_it_saved_when_the_broker_does_not_answer(
    db_url, engine, accounts, inceptionv1, tmp_path
):
    """The broker cannot be written: requestRender still answers its jobs, QUEUED (a sweeper sends them later)."""
    seed = int(time.time() * 1000) % 2**31
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "data" / "broker.sqlite").mkdir(parents=True)  # a folder where the embedded broker's file goes
    with kb_serve(env, log=tmp_path / "serve.log") as base:
        r = httpx.post(
            f"{base}/graphql",
            json={"query": REQUEST, "variables": {"kind": "WEIGHTS", "n": ["InceptionV1 3b:4"], "p": {"seed": seed}}},
            headers={"authorization": f"Bearer {accounts['editor']['token']}"},
            timeout=120,
        )
        assert r.status_code == 200, (r.text, (tmp_path / "serve.log").read_text()[-3000:])
        r = r.json()
    assert "errors" not in r, r
    (job,) = r["data"]["requestRender"]
    assert job["status"] == "QUEUED" and job["lane"] == "INTERACTIVE"
    with engine.begin() as conn:
        assert (
            conn.execute(sa.text("SELECT enqueued_at FROM render_job WHERE id = :i"), {"i": job["id"]}).scalar() is None
        )
        conn.execute(sa.text("UPDATE render_job SET status = 'CANCELLED' WHERE id = :i"), {"i": job["id"]})


def test_bulk_accounts_take_turns_and_interactive_work_goes_first(engine, inceptionv1):
    """The job table as the queue (kb.render.lanes.next_group), without a worker: two accounts' bulk layers
    alternate batch by batch (the second asked after the first's whole layer), and an interactive job asked
    last is taken before either."""
    from datetime import timedelta

    from kb.claims import accounts as acc
    from kb.db.render_tables import render_job_table
    from kb.db.tables import utcnow
    from kb.render import jobs, lanes

    seed = int(time.time() * 1000) % 2**31
    p = {"size": 32, "steps": 1, "seed": seed}
    with engine.begin() as conn:
        sha = conn.execute(sa.text("SELECT sha256 FROM model WHERE key = 'inceptionv1'")).scalar_one()
        a, b = (acc.create_user(conn, f"bulk-{who}-{seed}", "editor") for who in "ab")  # never served yet
        # other tests' jobs still queued: not due while this runs (restored below)
        parked = list(conn.execute(sa.text("SELECT id FROM render_job WHERE status = 'QUEUED'")).scalars())
        conn.execute(
            sa.text("UPDATE render_job SET next_attempt_at = :later WHERE status = 'QUEUED'"),
            {"later": utcnow() + timedelta(days=1)},
        )

    def ask(who, layer, units, lane):
        with engine.begin() as conn:
            units = [jobs.Unit("inceptionv1", sha, layer, u) for u in units]
            return jobs.request(conn, units, "FEATURE_VIS", p, who, None, lane)[0]

    made = []
    try:
        made += ask(a, "conv2d1", range(6), "bulk")
        made += ask(b, "conv2d2", range(6), "bulk")
        taken = []
        first = utcnow() - timedelta(minutes=1)
        for n in range(4):
            with engine.begin() as conn:
                group = lanes.next_group(conn, 2)
                assert group and {j["id"] for j in group} <= set(made), group
                jobs.start(conn, [j["id"] for j in group], "test", 300)
                for j in group:  # the batch ends; the next choice sees when each account was last served
                    conn.execute(  # each batch started a second after the one before (set, not the clock's)
                        sa.update(render_job_table)
                        .where(render_job_table.c.id == j["id"])
                        .values(status="DONE", started_at=first + timedelta(seconds=n))
                    )
            taken.append("a" if group[0]["requested_by"] == a else "b")
        made += ask(b, "mixed3a", [1], "interactive")
        with engine.begin() as conn:
            assert lanes.next_group(conn, 8)[0]["id"] == made[-1]
    finally:
        with engine.begin() as conn:
            jobs.cancel(conn, made)
            if parked:
                conn.execute(
                    sa.text("UPDATE render_job SET next_attempt_at = NULL WHERE id IN :ids").bindparams(
                        sa.bindparam("ids", expanding=True)
                    ),
                    {"ids": parked},
                )
    assert taken == ["a", "b", "a", "b"], taken
