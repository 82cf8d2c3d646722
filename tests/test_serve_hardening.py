"""Against a real `kb serve`: slow clients cut off, rate limits shared by processes through Redis, /health and a
cheap query answered while expensive ones run, and a standard client (gql) reading the schema.

What is asserted is behaviour (cut off, with which status; overtaken or not), each wait with a generous deadline
for a loaded machine; how soon a slow client is cut off against its setting, and how long a cheap request takes
while expensive ones run against an idle server, are bench/serve_hardening.py's figures."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import httpx
import pytest
from servers import kb_serve
from waits import wait_until

# within the budget: two strongest paths across 8 layers, 1-4 s of the server's CPU and a few hundred bytes
EXPENSIVE = (
    '{ a: path(from: "InceptionV1 3a:1", to: "InceptionV1 5b:1") { score } '
    'b: path(from: "InceptionV1 3a:2", to: "InceptionV1 5b:2") { score } }'
)
NEIGHBORS = (
    "query($k: String!) { neuron(key: $k) { key inputs(first: 10) { edges { weight magnitude node { key } } } } }"
)


@pytest.fixture(scope="module")
def server(kb_env, inceptionv1):
    env = {
        **kb_env,
        "KB_HEADER_TIMEOUT_S": "1",
        "KB_BODY_TIMEOUT_S": "2",
        "KB_MAX_HEADER_BYTES": "8192",
        "KB_QUERY_RATE_LIMIT": "",
    }
    with kb_serve(env, "--no-render-worker") as base:
        _wait_for_graph(base)
        yield base


@pytest.fixture(scope="module")
def kb_env(db_url, engine, tmp_path_factory):
    return {"KB_DATABASE_URL": db_url, "KB_DATA_DIR": str(tmp_path_factory.mktemp("data"))}


def _wait_for_graph(base: str) -> None:
    wait_until(
        lambda: httpx.get(f"{base}/health", timeout=5).json().get("graphs_loaded"),
        120,
        f"{base} to load its graphs (/health's graphs_loaded)",
        every=0.5,
    )


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(closed by the server within `seconds`, what it sent before closing)."""
    s.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        return True, got


def test_half_sent_headers_are_cut_off(server):
    s = _connect(server)
    s.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Ty")
    closed, got = _closed_within(s, 30)  # KB_HEADER_TIMEOUT_S is 1: the deadline is for a loaded machine
    assert closed and got.startswith(b"HTTP/1.1 408"), got


def test_silent_connection_is_cut_off(server):
    s = _connect(server)
    closed, _ = _closed_within(s, 30)
    assert closed


def test_trickling_body_is_cut_off(server):
    s = _connect(server)
    s.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{")
    deadline = time.monotonic() + 30  # KB_BODY_TIMEOUT_S is 2: the deadline is for a loaded machine
    closed = False
    while time.monotonic() < deadline:  # a byte every 0.3 s (the recv's timeout) until the server closes
        try:
            s.sendall(b" ")
        except OSError:
            closed = True
            break
        s.settimeout(0.3)
        try:
            if s.recv(4096) == b"":
                closed = True
                break
        except TimeoutError:
            pass
        except ConnectionResetError:  # closed while our last bytes were in flight: the peer answers with a reset
            closed = True
            break
    assert closed


def test_oversized_headers_are_refused(server):
    s = _connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    try:
        for _ in range(64):
            s.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    except OSError:
        pass
    closed, got = _closed_within(s, 5)
    assert closed and got.startswith(b"HTTP/1.1 431"), got[:100]


def test_a_normal_client_is_served(server):
    """After the slow clients above were cut off. Served, not fast: httpx's 5 s default read timeout failed once in
    CI's SQLite pass (a loaded 2-core machine) and passes in 0.02 s alone; the latency check is the next test's."""
    r = httpx.post(f"{server}/graphql", json={"query": NEIGHBORS, "variables": {"k": "InceptionV1 4c:447"}}, timeout=60)
    assert r.status_code == 200 and len(r.json()["data"]["neuron"]["inputs"]["edges"]) == 10


def test_health_and_a_cheap_query_answer_while_expensive_queries_run(server):
    """Four clients keep expensive queries running; meanwhile /health and a neighbour query overtake them: most of
    the cheap requests start after an expensive one started and end before that same one ends. A stalled server
    (every request behind the expensive ones) makes none overtake; no latency threshold is asserted (the figures
    are bench/serve_hardening.py's; a 2-core CI machine may delay any request, which is not what this is about)."""
    r = httpx.post(f"{server}/graphql", json={"query": EXPENSIVE}, timeout=60)
    assert "errors" not in r.json(), r.text[:500]
    stop = time.time() + 6
    expensive: list[tuple[float, float]] = []  # (start, end) of each expensive query
    sent: list[float] = []  # when each expensive query was sent

    def load():
        with httpx.Client(timeout=60) as c:
            while time.time() < stop:
                t = time.perf_counter()
                sent.append(t)
                c.post(f"{server}/graphql", json={"query": EXPENSIVE})
                expensive.append((t, time.perf_counter()))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(sent) >= len(threads), 30, "each load thread to send its first expensive query", 0.01)
    cheap: list[tuple[float, float]] = []  # (start, end) of each /health and neighbour request
    with httpx.Client(timeout=30) as c:
        while time.time() < stop - 1:
            t = time.perf_counter()
            assert c.get(f"{server}/health").status_code == 200
            cheap.append((t, time.perf_counter()))
            t = time.perf_counter()
            r = c.post(f"{server}/graphql", json={"query": NEIGHBORS, "variables": {"k": "InceptionV1 4c:447"}})
            cheap.append((t, time.perf_counter()))
            assert r.json()["data"]["neuron"]["key"] == "inceptionv1/mixed4c:447"
    for t in threads:
        t.join()
    assert len(expensive) >= 4, expensive
    overtook = [c for c in cheap if any(e0 < c[0] and c[1] < e1 for e0, e1 in expensive)]
    print(f"\n{len(overtook)} of {len(cheap)} cheap requests overtook one of {len(expensive)} expensive queries")
    assert len(overtook) >= len(cheap) // 2, (len(overtook), len(cheap))


def test_gql_client_reads_the_schema_and_runs_a_neighbour_query(server):
    from gql import Client
    from gql import gql as document
    from gql.transport.httpx import HTTPXTransport

    transport = HTTPXTransport(url=f"{server}/graphql", timeout=30)
    with Client(transport=transport, fetch_schema_from_transport=True) as session:
        result = session.execute(document(NEIGHBORS), variable_values={"k": "InceptionV1 4c:447"})
        assert len(result["neuron"]["inputs"]["edges"]) == 10
        assert session.client.schema.get_type("Neuron") is not None


def _two_servers(kb_env, **limits):
    env = {**kb_env, **{k: str(v) for k, v in limits.items()}}
    return kb_serve(env, "--no-render-worker"), kb_serve(env, "--no-render-worker")


def test_query_rate_limit_is_per_address_and_shared_by_processes(kb_env, inceptionv1):
    first, second = _two_servers(kb_env, KB_QUERY_RATE_LIMIT="5/minute")
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    with first as a, second as b:
        statuses = []
        for i in range(8):
            r = httpx.post(
                f"{(a, b)[i % 2]}/graphql",
                json={"query": "{ models { key } }"},
                headers={"x-forwarded-for": address},
            )
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
                assert int(r.headers["retry-after"]) >= 1
        assert statuses.count(200) == 5 and statuses.count(429) == 3, statuses
        other = httpx.post(
            f"{a}/graphql", json={"query": "{ models { key } }"}, headers={"x-forwarded-for": "10.9.9.9"}
        )
        assert other.status_code == 200


def test_mutation_rate_limit_is_per_account_across_tokens_and_processes(kb_env, inceptionv1, engine):
    from kb.claims import accounts as acc

    name = f"limited-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, "editor")
        tokens = [acc.create_token(conn, name) for _ in range(3)]
    first, second = _two_servers(kb_env, KB_RATE_LIMIT_PER_MINUTE=4, KB_RATE_LIMIT_BURST=0, KB_QUERY_RATE_LIMIT="")
    mutation = 'mutation { reviewClaim(key: "claim:999999", verdict: SUPPORT) { revision } }'
    with first as a, second as b:
        codes = []
        for i in range(9):
            r = httpx.post(
                f"{(a, b)[i % 2]}/graphql",
                json={"query": mutation},
                headers={"authorization": f"Bearer {tokens[i % 3]}"},
            )
            codes.append(r.json()["errors"][0]["extensions"]["code"])
        assert codes.count("RATE_LIMITED") == 5 and codes.count("NOT_FOUND") == 4, codes


def test_building_and_starting_an_app_leaves_its_process_settings_alone(engine, inceptionv1):
    """The switch interval and the frozen start-up objects are kb serve's, applied by its server processes
    (kb.cli.serve.server_app), not by an app: here the graphs warm, then ``after_warm`` runs, and neither the
    garbage collector's frozen objects nor the switch interval have changed."""
    import gc
    import sys

    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    frozen, interval = gc.get_freeze_count(), sys.getswitchinterval()
    warmed = threading.Event()
    app = create_app(
        Settings(database_url=str(engine.url.render_as_string(hide_password=False))),
        engine=engine,
        after_warm=warmed.set,
    )
    with TestClient(app) as client:
        assert warmed.wait(60) and app.state.graphs.loaded()
        assert client.get("/health").json()["status"] == "ok"
    assert gc.get_freeze_count() == frozen and sys.getswitchinterval() == interval
