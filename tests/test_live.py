"""Live updates: the activity feed (API and page, filterable by model), and server-sent events that reach a client
of one server process when another process commits the change (PostgreSQL: LISTEN/NOTIFY; SQLite: polling)."""

import json
import queue
import random
import re
import secrets
import threading
import time
from collections import Counter
from contextlib import contextmanager
from itertools import pairwise

import httpx
import sqlalchemy as sa
from conftest import as_user, gql
from servers import free_port, kb_serve
from waits import wait_until

from kb.claims import activity
from kb.db.annotation_tables import activity_table
from kb.web.live.hub import Filter
from kb.web.live.routes import link

CLAIM = """mutation($i: ClaimInput!) { createClaim(input: $i) { key revision } }"""
REVIEW = """mutation($k: String!) { reviewClaim(key: $k, verdict: SUPPORT, comment: "checked") { revision } }"""
CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"


def test_feed_in_the_api_and_on_its_page(api, engine, accounts):
    ed, ed2 = accounts["editor"]["token"], accounts["editor2"]["token"]
    made = as_user(api, ed, CLAIM, {"i": {"label": "feed me", "kind": "FEATURE", "subjects": ["InceptionV1 3a:7"]}})[
        "data"
    ]["createClaim"]
    as_user(api, ed2, REVIEW, {"k": made["key"]})
    everything = gql(
        api, '{ activity(model: "InceptionV1", first: 200) { id kind subject summary actor neurons model } }'
    )["data"]["activity"]
    assert [f["id"] for f in everything] == sorted((f["id"] for f in everything), reverse=True)  # newest first
    # its own two rows (other writers may have added theirs in between)
    feed = [f for f in everything if f["subject"] in (made["key"], made["key"] + "@1")]
    assert [f["kind"] for f in feed] == ["REVIEW", "CLAIM"]
    assert feed[1]["subject"] == made["key"] + "@1" and feed[1]["actor"] == accounts["editor"]["name"]
    assert feed[0]["actor"] == accounts["editor2"]["name"] and "supports" in feed[0]["summary"]
    assert feed[1]["neurons"] == ["inceptionv1/mixed3a:7"] and {f["model"] for f in feed} == {"inceptionv1"}
    only_reviews = gql(api, "{ activity(kind: REVIEW, first: 50) { kind } }")["data"]["activity"]
    assert only_reviews and {f["kind"] for f in only_reviews} == {"REVIEW"}
    older = gql(api, "query($b: Int!) { activity(before: $b, first: 1) { id } }", {"b": feed[0]["id"]})
    assert older["data"]["activity"][0]["id"] < feed[0]["id"]
    bad = gql(api, '{ activity(model: "no-such-model") { id } }')["errors"][0]
    assert bad["extensions"]["code"] in ("NOT_FOUND", "BAD_KEY")
    too_many = gql(api, "{ activity(first: 100000) { id } }")["errors"][0]
    assert too_many["extensions"]["code"] == "LIMIT_EXCEEDED"

    with engine.connect() as conn:
        before = activity.last_seq(conn)
    page = api.get("/activity?model=inceptionv1")
    with engine.connect() as conn:
        after = activity.last_seq(conn)
    # its stream starts where the page was read (a seq: commit order), so that it misses nothing after it
    assert before <= int(re.search(r'data-since="(\d+)"', page.text)[1]) <= after
    assert page.status_code == 200 and made["key"] + "@1" in page.text and "feed me" in page.text
    assert '<label for="model">Model</label>' in page.text and '<script src="/static/activity.js?v=' in page.text
    assert "<script>" not in page.text  # no inline script
    script = api.get(re.search(r'<script src="(/static/activity\.js[^"]*)"', page.text)[1])
    assert script.status_code == 200 and "EventSource" in script.text
    assert api.get("/events?neuron=not-a-key").status_code == 400


def test_filters():
    row = {"neurons": ["m/l:1"], "claim_id": 3, "circuit_id": None, "model_key": "m"}
    assert Filter().matches(row)
    assert Filter(neurons=frozenset({"m/l:1"})).matches(row)
    assert not Filter(neurons=frozenset({"m/l:2"})).matches(row)
    assert Filter(claims=frozenset({3})).matches(row) and not Filter(claims=frozenset({4})).matches(row)
    assert not Filter(circuits=frozenset({3})).matches(row)
    assert Filter(models=frozenset({"m"})).matches(row) and not Filter(models=frozenset({"x"})).matches(row)


def _listen(base: str, params: dict, out: queue.Queue, ready: threading.Event, stop: threading.Event) -> None:
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=40)) as client,
        client.stream("GET", "/events", params=params) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        ready.set()
        event_id, data = None, None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                out.put((event_id, data, time.monotonic()))
                data = None


def test_an_event_from_one_server_reaches_a_client_of_another(engine, db_url, inceptionv1, accounts):
    """Two `kb serve` processes on one database: a circuit edited through A is streamed by B within seconds."""
    env = {"KB_DATABASE_URL": db_url}
    token = accounts["editor"]["token"]
    with (
        kb_serve(env, "--no-render-worker", timeout=120) as a,
        kb_serve(env, "--no-render-worker", timeout=120) as b,
        httpx.Client(base_url=a, timeout=30, headers={"authorization": f"Bearer {token}"}) as writer,
    ):
        key = writer.post(
            "/graphql",
            json={"query": CIRCUIT, "variables": {"i": {"name": "live", "neurons": ["InceptionV1 4c:9"]}}},
        ).json()["data"]["createCircuit"]["key"]
        events: queue.Queue = queue.Queue()
        ready, stop = threading.Event(), threading.Event()
        listener = threading.Thread(target=_listen, args=(b, {"circuit": key}, events, ready, stop), daemon=True)
        listener.start()
        # the stream answered: server B subscribed it before that, so every commit from now on is its to send
        assert ready.wait(20)
        # an unrelated change first: the filter must hold it back
        writer.post(
            "/graphql",
            json={"query": CIRCUIT, "variables": {"i": {"name": "other", "neurons": ["InceptionV1 4c:8"]}}},
        )
        sent = time.monotonic()
        edit = writer.post(
            "/graphql",
            json={
                "query": """mutation($k: String!) { updateCircuit(key: $k, expectedRevision: 1,
                    patch: {description: "seen live"}) { revision } }""",
                "variables": {"k": key},
            },
        ).json()
        assert edit["data"]["updateCircuit"]["revision"] == 2, edit
        event_id, data, arrived = events.get(timeout=10)
        stop.set()
    assert data["subject"] == f"{key}@2" and data["kind"] == "CIRCUIT" and data["actor"] == accounts["editor"]["name"]
    assert data["url"] == f"/circuits/{key.split(':')[1]}" and event_id == data["seq"]  # commit order
    print(f"\nevent from server A reached a client of server B after {arrived - sent:.2f} s")
    with engine.connect() as conn:  # and it is the feed's row, replayable by id
        assert [r["subject"] for r in activity.after(conn, event_id - 1, 1)] == [f"{key}@2"]


def test_a_reconnecting_stream_gets_what_it_missed(engine, db_url, inceptionv1, accounts):
    env = {"KB_DATABASE_URL": db_url}
    token = accounts["editor"]["token"]
    with engine.connect() as conn:
        since = activity.last_seq(conn)
    with (
        kb_serve(env, "--no-render-worker", timeout=120) as base,
        httpx.Client(base_url=base, timeout=30, headers={"authorization": f"Bearer {token}"}) as writer,
    ):
        key = writer.post(
            "/graphql",
            json={"query": CIRCUIT, "variables": {"i": {"name": "missed", "neurons": ["InceptionV1 4c:7"]}}},
        ).json()["data"]["createCircuit"]["key"]
        events: queue.Queue = queue.Queue()
        ready, stop = threading.Event(), threading.Event()
        threading.Thread(
            target=_listen, args=(base, {"circuit": key, "since": str(since)}, events, ready, stop), daemon=True
        ).start()
        _, data, _ = events.get(timeout=10)
        stop.set()
    assert data["subject"] == f"{key}@1"


def test_a_finished_render_lands_in_the_feed_once(engine, inceptionv1):
    """jobs.finish records the landing in its own transaction; a duplicate finish (redelivery) records nothing."""
    from kb.render import jobs

    with engine.begin() as conn:
        sha = conn.execute(sa.text("SELECT sha256 FROM model WHERE key = 'inceptionv1'")).scalar_one()
        unit = jobs.Unit("inceptionv1", sha, "mixed3b", 11)
        params = {"nonce": secrets.token_hex(4)}
        (job_id,), _ = jobs.request(conn, [unit], "WEIGHTS", params)
        assert jobs.start(conn, [job_id], "test", 60)
        before = activity.last_seq(conn)
    artifact = {
        "sha256": secrets.token_hex(32),
        "content_type": "image/png",
        "bytes": 1,
        "width": 1,
        "height": 1,
        "kind": "WEIGHTS",
        "params": params,
        "versions": {},
        "meta": {},
    }
    for _ in range(2):
        with engine.begin() as conn:
            jobs.finish(conn, job_id, artifact)
    with engine.connect() as conn:
        rows = activity.after(conn, before)
    landed = [r for r in rows if r["subject"] == f"render:{job_id}"]
    assert len(landed) == 1 and landed[0]["kind"] == "RENDER"
    assert landed[0]["neurons"] == ["inceptionv1/mixed3b:11"] and landed[0]["actor"] is None
    assert link(landed[0]) == "/n/inceptionv1/mixed3b/11"


# --- resumption through the real SSE route: every event exactly once, whatever the commit order ------------------


@contextmanager
def live_server(engine):
    """The app (``create_app``) under uvicorn in a thread of this process, on a free port of 127.0.0.1: the real
    route over real HTTP, and the app's objects (``app.state.live``) within reach of the test."""
    import uvicorn

    from kb.settings import Settings
    from kb.web.app import create_app

    app = create_app(Settings(database_url=engine.url.render_as_string(hide_password=False)), engine=engine, warm=False)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on", timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:  # uvicorn sets it once the socket listens
        assert thread.is_alive(), "uvicorn's thread ended before it listened"
        return server.started

    wait_until(started, 60, "uvicorn (in a thread of this process) to listen", every=0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Resuming:
    """A client that follows /events as a browser's EventSource does: it keeps the last event id the server set
    (an ``id:`` with no data included) and sends it as ``Last-Event-ID`` when it connects again."""

    def __init__(self, base: str, params: dict, last_id: str | None = None):
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(30, read=40))
        self.params = params
        self.last_id = last_id
        self.connections = 0

    def connect(self):
        """Yields ``("open", None)`` once the stream answers, then ``("event", data)`` for each event and
        ``("id", last_id)`` for each id-only message; the caller closes the stream by stopping the generator."""
        headers = {"last-event-id": self.last_id} if self.last_id is not None else {}
        with self.client.stream("GET", "/events", params=self.params, headers=headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            self.connections += 1
            yield "open", None
            event_id, data = None, None
            for line in response.iter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                elif line == "":
                    if event_id is not None:
                        self.last_id = event_id
                    if data is not None:
                        yield "event", data
                        data = None
                    elif event_id is not None:
                        yield "id", event_id
                    event_id = None

    def close(self):
        self.client.close()


def _record(engine, model: str, subject: str, hold_s: float = 0.0) -> None:
    """One activity row in its own transaction, held open ``hold_s`` after the row took its id (and so its
    place among the ids) before it commits."""
    with engine.begin() as conn:
        activity.record(conn, "CIRCUIT", model, subject, "live test")
        if hold_s:
            time.sleep(hold_s)  # not a wait but the scenario: held open, it commits after rows with higher ids


def test_a_client_that_keeps_reconnecting_gets_every_event_once_though_commits_come_out_of_order(engine):
    """8 writers x 10 rows, each commit delayed by a random moment after the row took its id (so on PostgreSQL
    ids commit out of order), while a client reads a few events at a time and reconnects with Last-Event-ID."""
    model = f"live-{secrets.token_hex(3)}"
    expected = [f"circuit:{w}@{i}" for w in range(8) for i in range(1, 11)]
    hold = 0.05 if engine.dialect.name == "postgresql" else 0.01  # SQLite: writers queue for its one write lock
    t = activity_table
    got: list[str] = []
    connections = [0]
    opened, done = threading.Event(), threading.Event()

    def read(base):
        client = Resuming(base, {"model": model})
        rng = random.Random(1)
        try:
            while not done.is_set():
                stream = client.connect()
                budget = rng.randint(1, 4)  # events to read before dropping the connection
                for what, data in stream:
                    if what == "open":
                        opened.set()
                    elif what == "event":
                        got.append(data["subject"])
                        budget -= 1
                        if data["subject"] == "end":
                            done.set()
                    if done.is_set() or budget == 0:
                        break
                stream.close()
        finally:
            connections[0] = client.connections
            client.close()

    def write(w):
        rng = random.Random(w)
        for i in range(1, 11):
            _record(engine, model, f"circuit:{w}@{i}", rng.uniform(0, hold))

    with live_server(engine) as (base, _app):
        reader = threading.Thread(target=read, args=(base,), daemon=True)
        reader.start()
        assert opened.wait(30)  # subscribed: from here on, every commit is the client's to get
        writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=120)
        _record(engine, model, "end")  # committed after all the others: the client stops when it gets it
        reader.join(timeout=120)
        assert done.is_set(), "the client never got the last event"
    with engine.connect() as conn:  # the ids of the writers' rows, in the order they committed
        ids = conn.scalars(sa.select(t.c.id).where(t.c.model_key == model).order_by(t.c.seq)).all()
    late = sum(b < a for a, b in pairwise(ids))  # rows that committed after a row with a higher id
    print(f"\n{late} of {len(ids)} rows committed after a higher id; the client connected {connections[0]} times")
    # what made "ids after the last seen" skip rows on PostgreSQL; SQLite has one writer at a time
    assert late > 0 if engine.dialect.name == "postgresql" else late == 0
    assert got[-1] == "end"
    duplicates = sorted(s for s, n in Counter(got).items() if n > 1)
    missing = sorted(set(expected) - set(got))
    assert not duplicates and not missing, f"duplicates {duplicates}, missing {missing}"
    assert len(got) == len(expected) + 1


def test_a_replay_longer_than_a_page_sends_all_of_it_and_moves_the_cursor_past_what_the_filter_skips(
    engine, monkeypatch
):
    """12 rows missed (a page is 5), every third of another model: the replay sends all 8 of the client's, then an
    id-only message past the skipped rows, then what commits while it is connected."""
    from kb.web.live import routes

    monkeypatch.setattr(routes, "REPLAY_PAGE", 5)
    mine, other = f"live-{secrets.token_hex(3)}", f"live-{secrets.token_hex(3)}"
    with engine.connect() as conn:
        since = activity.last_seq(conn)
    subjects = [(other if i % 3 == 0 else mine, f"circuit:1@{i}") for i in range(1, 13)]
    for model, subject in subjects:
        _record(engine, model, subject)
    with engine.connect() as conn:
        last = activity.last_seq(conn)
    with live_server(engine) as (base, _app):
        client = Resuming(base, {"model": mine}, str(since))
        stream = client.connect()
        assert next(stream) == ("open", None)
        replayed = [next(stream) for _ in range(8)]
        assert [data["subject"] for _, data in replayed] == [s for m, s in subjects if m == mine]
        assert next(stream) == ("id", str(last))  # the last row (circuit:1@12) is the other model's
        _record(engine, mine, "circuit:1@13")
        what, data = next(stream)
        assert what == "event" and data["subject"] == "circuit:1@13" and client.last_id == str(data["seq"])
        stream.close()
        client.close()


def test_one_connection_replays_a_bounded_number_of_pages_and_the_client_resumes_from_its_cursor(engine, monkeypatch):
    """A client far behind (12 rows, pages of 2, at most 2 pages a connection) gets 4 rows, then the stream ends;
    reconnecting with the last id it was given, it gets the next 4, and so on: every row once, in order."""
    from kb.web.live import routes

    monkeypatch.setattr(routes, "REPLAY_PAGE", 2)
    monkeypatch.setattr(routes, "REPLAY_PAGES", 2)
    mine = f"live-{secrets.token_hex(3)}"
    with engine.connect() as conn:
        since = activity.last_seq(conn)
    subjects = [f"circuit:1@{i}" for i in range(1, 13)]
    for subject in subjects:
        _record(engine, mine, subject)
    got: list[list[str]] = []
    with live_server(engine) as (base, _app):
        client = Resuming(base, {"model": mine}, str(since))
        for _ in range(3):
            stream = client.connect()
            assert next(stream) == ("open", None)
            got.append([data["subject"] for what, data in stream if what == "event"])  # until the server ends it
        client.close()
    assert got == [subjects[0:4], subjects[4:8], subjects[8:12]]


def _fail_once_in_the_follower(monkeypatch, exc: BaseException) -> threading.Event:
    """The follower's next read of the feed raises ``exc`` (once; only in the follower's thread)."""
    raised = threading.Event()
    for name in ("after", "by_ids"):
        real = getattr(activity, name, None)
        if real is None:
            continue

        def failing(*args, _real=real, **kwargs):
            if threading.current_thread().name == "kb-live" and not raised.is_set():
                raised.set()
                raise exc
            return _real(*args, **kwargs)

        monkeypatch.setattr(activity, name, failing)
    return raised


def test_the_follower_starts_again_when_it_fails_or_dies_and_open_streams_keep_their_events(engine, monkeypatch):
    model = f"live-{secrets.token_hex(3)}"
    events: queue.Queue = queue.Queue()
    opened = threading.Event()

    def read(client):
        for what, data in client.connect():
            if what == "open":
                opened.set()
            elif what == "event":
                events.put(data["subject"])
                if data["subject"] == "circuit:1@3":
                    return

    with live_server(engine) as (base, app):
        client = Resuming(base, {"model": model})
        reader = threading.Thread(target=read, args=(client,), daemon=True)
        reader.start()
        assert opened.wait(30)
        _record(engine, model, "circuit:1@1")
        assert events.get(timeout=20) == "circuit:1@1"

        failed = _fail_once_in_the_follower(monkeypatch, RuntimeError("injected: the follower's read failed"))
        _record(engine, model, "circuit:1@2")
        assert failed.wait(20)
        assert events.get(timeout=20) == "circuit:1@2"  # the same stream: the follower started again

        killed = _fail_once_in_the_follower(monkeypatch, SystemExit())  # ends the thread (no handler catches it)
        _record(engine, model, "circuit:1@3")
        assert killed.wait(20)
        assert events.get(timeout=20) == "circuit:1@3"  # an open stream noticed and started it again
        reader.join(timeout=20)
        client.close()
        assert client.connections == 1 and events.empty()
        assert app.state.live.hub.restarts == 2


@contextmanager
def scratch_database_url(tmp_path):
    """A database of its own (not the session's), of the backend under test."""
    from conftest import ADMIN_URL, BACKEND

    from kb.db.engine import make_engine

    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.sqlite'}"
        return
    name = f"kb_scratch_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_migration_0007_gives_existing_rows_their_id_as_seq_and_new_ones_the_next(tmp_path):
    """Rows from before the migration keep their place (a browser's Last-Event-ID, an id until then, still
    resumes where it was); a row written after it gets a seq above them all; the downgrade takes it all away."""
    from alembic import command
    from kb.db import migrate
    from kb.db.engine import make_engine

    with scratch_database_url(tmp_path) as url:
        migrate.upgrade(url, "0006")
        engine = make_engine(url)
        with engine.begin() as conn:
            for i in range(3):
                conn.execute(
                    sa.text(
                        "INSERT INTO activity (at, kind, model_key, subject, summary, neurons) "
                        "VALUES (:at, 'CIRCUIT', 'm', :s, '', '[]')"
                    ),
                    {"at": "2026-01-01T00:00:00+00:00", "s": f"circuit:1@{i + 1}"},
                )
        migrate.upgrade(url)
        with engine.begin() as conn:
            new = activity.record(conn, "CIRCUIT", "m", "circuit:1@4")
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, seq FROM activity ORDER BY id")).all()
            assert [r.seq for r in rows[:3]] == [r.id for r in rows[:3]] and rows[3].id == new
            assert rows[3].seq > rows[2].seq and activity.last_seq(conn) == rows[3].seq
            assert [r["subject"] for r in activity.after(conn, rows[0].seq)] == [
                "circuit:1@2",
                "circuit:1@3",
                "circuit:1@4",
            ]
        command.downgrade(migrate.config(url), "0006")
        with engine.connect() as conn:
            assert "seq" not in {c["name"] for c in sa.inspect(conn).get_columns("activity")}
            conn.execute(  # no trigger is left behind to set a column that is gone
                sa.text(
                    "INSERT INTO activity (at, kind, model_key, subject, summary, neurons) "
                    "VALUES ('2026-01-01T00:00:00+00:00', 'CIRCUIT', 'm', 'circuit:1@5', '', '[]')"
                )
            )
            conn.commit()
        engine.dispose()
