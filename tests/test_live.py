"""Live updates: the activity feed (API and page, filterable by model), and server-sent events that reach a client
of one server process when another process commits the change (PostgreSQL: LISTEN/NOTIFY; SQLite: polling)."""

import json
import queue
import re
import secrets
import threading
import time

import httpx
import sqlalchemy as sa
from conftest import as_user, gql
from servers import kb_serve

from kb.claims import activity
from kb.web.live.hub import Filter
from kb.web.live.routes import link

CLAIM = """mutation($i: ClaimInput!) { createClaim(input: $i) { key revision } }"""
REVIEW = """mutation($k: String!) { reviewClaim(key: $k, verdict: SUPPORT, comment: "checked") { revision } }"""
CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"


def test_feed_in_the_api_and_on_its_page(api, accounts):
    ed, ed2 = accounts["editor"]["token"], accounts["editor2"]["token"]
    made = as_user(api, ed, CLAIM, {"i": {"label": "feed me", "kind": "FEATURE", "subjects": ["InceptionV1 3a:7"]}})[
        "data"
    ]["createClaim"]
    as_user(api, ed2, REVIEW, {"k": made["key"]})
    feed = gql(api, '{ activity(model: "InceptionV1", first: 5) { id kind subject summary actor neurons model } }')[
        "data"
    ]["activity"]
    assert [f["kind"] for f in feed[:2]] == ["REVIEW", "CLAIM"] and feed[0]["id"] > feed[1]["id"]  # newest first
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

    page = api.get("/activity?model=inceptionv1")
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
        assert ready.wait(20)
        time.sleep(0.5)  # the follower of server B has started (it starts with the first stream)
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
    assert data["url"] == f"/circuits/{key.split(':')[1]}" and event_id == data["id"]
    assert arrived - sent < 5.0, f"{arrived - sent:.2f} s"
    print(f"\nevent from server A reached a client of server B after {arrived - sent:.2f} s")
    with engine.connect() as conn:  # and it is the feed's row, replayable by id
        assert [r["subject"] for r in activity.after(conn, event_id - 1, 1)] == [f"{key}@2"]


def test_a_reconnecting_stream_gets_what_it_missed(engine, db_url, inceptionv1, accounts):
    env = {"KB_DATABASE_URL": db_url}
    token = accounts["editor"]["token"]
    with engine.connect() as conn:
        since = activity.last_id(conn)
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
        before = activity.last_id(conn)
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
