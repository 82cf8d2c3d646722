"""Prometheus metrics (kb.metrics): a real `kb serve --workers 2` scraped before and after known traffic (the
counts of both processes added up), the render queue as the database has it, KB_METRICS and KB_METRICS_ALLOW, and a
real `kb worker --metrics-port` whose job durations and heartbeat move when it renders."""

from __future__ import annotations

import random
import time

import httpx
import sqlalchemy as sa
from conftest import as_user
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port, kb_serve
from starlette.testclient import TestClient
from test_render import JOBS, REQUEST, SMALL, _wait, _worker, clean_queue  # noqa: F401 (clean_queue: a fixture)

from kb.schema import operation_type

NEIGHBORS = "query($k: String!) { neuron(key: $k) { key inputs(first: 3) { edges { weight node { key } } } } }"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def test_operation_type_is_read_from_the_document():
    assert operation_type('{ neuron(key: "x") { key } }') == "query"
    assert operation_type("query Q($k: String!) { a }") == "query"
    assert operation_type("fragment F on Neuron { key } mutation M { ...F }") == "mutation"
    assert operation_type("query A { a } mutation B { b }", "B") == "mutation"
    assert operation_type('# mutation\n{ a(s: "mutation {") }') == "query"
    assert operation_type("subscription { activity { id } }") == "subscription"
    assert operation_type("nonsense") == "unknown"


def test_a_scrape_of_two_server_processes_counts_what_they_answered(db_url, engine, inceptionv1):
    env = {"KB_DATABASE_URL": db_url, "KB_QUERY_RATE_LIMIT": "40/minute"}
    with kb_serve(env, "--workers", "2", "--no-render-worker", timeout=120) as base, httpx.Client(timeout=60) as c:
        c.get(f"{base}/n/inceptionv1/mixed4c")  # both processes read the graph before the counting starts
        before = samples(c.get(f"{base}/metrics").text)
        for i in range(6):
            r = c.post(f"{base}/graphql", json={"query": NEIGHBORS, "variables": {"k": f"InceptionV1 4c:{i}"}})
            assert r.json()["data"]["neuron"]["key"] == f"inceptionv1/mixed4c:{i}"
        invalid = c.post(f"{base}/graphql", json={"query": "{ nosuchfield }"}).json()["errors"][0]["extensions"]["code"]
        made = 'mutation { createCircuit(input: {name: "x", neurons: ["InceptionV1 4c:1"]}) { key } }'
        denied = c.post(f"{base}/graphql", json={"query": made})
        assert denied.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", denied.text
        assert c.get(f"{base}/n/inceptionv1/mixed4c/447").status_code == 200
        scrape = c.get(f"{base}/metrics")
        assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
        after = samples(scrape.text)
        for _ in range(40):  # past the 40 queries a minute this address may send
            if c.post(f"{base}/graphql", json={"query": "{ models { key } }"}).status_code == 429:
                break
        limited = samples(c.get(f"{base}/metrics").text)  # /metrics itself is not rate limited

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kb_graphql_requests_total", operation="query", outcome="ok") == 6  # each counted once, both processes
    assert delta("kb_graphql_request_seconds_count", operation="query") >= 7
    assert delta("kb_graphql_requests_total", operation="query", outcome=invalid) == 1  # the code the answer gave
    assert delta("kb_graphql_requests_total", operation="mutation", outcome="UNAUTHENTICATED") == 1
    assert delta("kb_compiled_plans_total", result="answered") + delta("kb_compiled_plans_total", result="inline") >= 4
    assert delta("kb_page_request_seconds_count", route="/n/{rest:path}", status="2xx") == 1
    assert (
        value(limited, "kb_rate_limit_refusals_total", limit="query")
        - value(after, "kb_rate_limit_refusals_total", limit="query")
        >= 1
    )
    assert value(after, "kb_graph_memory_bytes", model="inceptionv1", pid=_any_pid(after)) > 1e6
    # the render queue: what the job table says, by lane and state
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT lane, status, count(*) FROM render_job GROUP BY lane, status")).all()
    for lane, status, n in rows:
        assert value(after, "kb_render_jobs", lane=lane, status=status.lower()) == n, (lane, status)


def _any_pid(scrape: dict) -> str:
    pids = [dict(labels).get("pid") for name, labels in scrape if name == "kb_graph_memory_bytes"]
    assert pids, "no kb_graph_memory_bytes sample"
    return str(pids[0])


def test_metrics_can_be_turned_off_or_kept_to_some_addresses(engine, inceptionv1):
    from kb.settings import Settings
    from kb.web.app import create_app

    url = str(engine.url.render_as_string(hide_password=False))
    off = create_app(Settings(database_url=url, metrics=False), engine=engine, warm=False)
    with TestClient(off, client=("127.0.0.1", 50000)) as c:
        assert c.get("/metrics").status_code == 404
    kept = create_app(Settings(database_url=url, metrics_allow="10.1.0.0/16, 192.0.2.7"), engine=engine, warm=False)
    with TestClient(kept, client=("10.1.2.3", 50000)) as c:
        assert c.get("/metrics").status_code == 200
    with TestClient(kept, client=("127.0.0.1", 50000)) as c:
        r = c.get("/metrics")
        assert r.status_code == 403 and "KB_METRICS_ALLOW" in r.text


def test_a_worker_serves_its_job_durations_and_heartbeat(api, accounts, db_url, clean_queue):  # noqa: F811
    from kb.settings import get_settings

    port = free_port()
    worker = _worker(db_url, get_settings().artifacts_dir, KB_WORKER_METRICS_PORT=port)
    try:
        seed = random.randrange(10**6)  # a render no earlier run asked for: it runs here
        asked = as_user(
            api,
            accounts["editor"]["token"],
            REQUEST,
            {"kind": "FEATURE_VIS", "n": ["InceptionV1 3a:17"], "p": {**SMALL, "seed": seed}},
        )
        ids = [j["id"] for j in asked["data"]["requestRender"]]
        jobs = _wait(api, ids, lambda js: all(j["status"] in ("DONE", "FAILED") for j in js))
        assert [j["status"] for j in jobs] == ["DONE"], jobs
        scrape = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    done = value(scrape, "kb_render_job_seconds_count", kind="FEATURE_VIS", lane="interactive", outcome="done")
    assert done >= 1, sorted(k for k in scrape if k[0].startswith("kb_render"))
    beats = [v for (name, _labels), v in scrape.items() if name == "kb_worker_heartbeat_timestamp_seconds"]
    assert beats and time.time() - max(beats) < 300, beats
