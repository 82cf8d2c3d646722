"""The attacks of issue 9, replayed against a real `kb serve`: time to refuse (or answer) and the server's RSS growth.

Needs a database with InceptionV1 imported (KB_DATABASE_URL, PostgreSQL for the figures in notes) and, for the
shared rate limit, Redis (KB_REDIS_URL or a redis:// KB_BROKER_URL; else the in-process limiter). Starts one
`kb serve` with the default settings except the per-address query limit (one machine sends everything here),
prints one line per attack, stops the server.

    KB_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/kb python bench/attacks.py [--slow]

--slow also replays the slow-client attacks at their real scale (200 trickling connections, 20 silent ones;
about a minute).
"""

from __future__ import annotations

import argparse
import base64
import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
from kb_server import running


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(base: str, query: str, variables: dict | None = None, headers: dict | None = None, timeout: float = 120):
    started = time.perf_counter()
    r = httpx.post(
        f"{base}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=timeout
    )
    elapsed = time.perf_counter() - started
    body = r.json()
    codes = sorted({e["extensions"]["code"] for e in body.get("errors", [])})
    return elapsed, r.status_code, codes, len(r.content)


def doubling(n: int) -> str:
    return f'{{ neuron(key: "InceptionV1 4c:1") {{ ...F{n} }} }} fragment F0 on Neuron {{ key }} ' + " ".join(
        f"fragment F{i} on Neuron {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)
    )


def report(name: str, pid: int, before: float, result) -> None:
    elapsed, status, codes, size = result
    print(
        f"{name:<48} {elapsed * 1000:9.1f} ms  HTTP {status}  {','.join(codes) or 'data':<16} "
        f"{size:>9} B  RSS {rss_mib(pid) - before:+7.1f} MiB",
        flush=True,
    )


def health_while(base: str, query: str, n: int) -> tuple[float, float]:
    """(max /health latency, how long the n concurrent queries took)."""
    stop = threading.Event()
    worst = [0.0]

    def probe():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                t = time.perf_counter()
                c.get(f"{base}/health")
                worst[0] = max(worst[0], time.perf_counter() - t)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=post, args=(base, query)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    stop.set()
    prober.join()
    return worst[0], took


def slow_clients(base: str, n: int, mode: str, limit_s: float) -> tuple[int, float]:
    """(connections still open after limit_s, seconds until the last one closed)."""
    host, port = base.removeprefix("http://").split(":")
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        if mode == "trickle":
            s.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n{"
            )
        else:
            s.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Le")
        s.setblocking(False)
        socks.append(s)
    started = time.time()
    open_ = set(range(n))
    last = 0.0
    next_byte = started + 10
    while open_ and time.time() - started < limit_s:
        for i in list(open_):
            try:
                if socks[i].recv(4096) == b"":
                    open_.discard(i)
                    last = time.time() - started
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
                last = time.time() - started
        if mode == "trickle" and time.time() > next_byte:
            next_byte += 10
            for i in list(open_):
                try:
                    socks[i].send(b" ")
                except OSError:
                    open_.discard(i)
        time.sleep(0.2)
    for s in socks:
        s.close()
    return len(open_), last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", action="store_true")
    args = parser.parse_args()
    with running({"KB_QUERY_RATE_LIMIT": "100000/minute"}) as (base, pid):
        post(base, '{ neuron(key: "InceptionV1 4c:447") { key } }')
        start_rss = rss_mib(pid)
        print(f"kb serve pid {pid}, RSS {start_rss:.0f} MiB with InceptionV1 loaded", flush=True)
        attacks = [
            ("baseline: { models { key } }", "{ models { key } }", None),
            ("fragment doubling, 21 levels", doubling(21), None),
            ("fragment doubling, 190 levels", doubling(190), None),
            (
                "inputs(first:100) nested 3 deep",
                '{ neuron(key:"InceptionV1 4c:447") { inputs(first:100){edges{node{ inputs(first:100){edges{node{ '
                "inputs(first:100){edges{weight}}}}}}}}}}",
                None,
            ),
            (
                "30 aliased subgraph(depth:4, perNode:12){kernel}",
                "{ "
                + " ".join(
                    f'a{i}: subgraph(roots: ["InceptionV1 4c:447"], depth: 4, perNode: 12) {{ edges {{ kernel }} }}'
                    for i in range(30)
                )
                + " }",
                None,
            ),
            (
                "30 aliased path",
                "{ "
                + " ".join(
                    f'p{i}: path(from: "InceptionV1 4b:373", to: "InceptionV1 4c:447") {{ score }}' for i in range(30)
                )
                + " }",
                None,
            ),
            (
                "nodes(ids:) with 20,000 claim IDs",
                "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                {"ids": [base64.b64encode(f"Claim:{i}".encode()).decode() for i in range(20000)]},
            ),
            ("standard introspection query", __import__("graphql").get_introspection_query(), None),
            ('claim(key:"claim:99999999999999999999")', '{ claim(key: "claim:99999999999999999999") { key } }', None),
            (
                "claims(after: huge cursor)",
                '{ claims(after: "bzo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5") { totalCount } }',
                None,
            ),
            ("NUL in search text", "query($t: String!) { searchClaims(text: $t) { totalCount } }", {"t": "a\x00b"}),
        ]
        for name, query, variables in attacks:
            before = rss_mib(pid)
            report(name, pid, before, post(base, query, variables))
        for name, query in (
            (
                "allowed subgraph(depth:4, perNode:4, BOTH)",
                '{ subgraph(roots: ["InceptionV1 4c:447"], direction: BOTH, depth: 4, perNode: 4) '
                "{ nodes { key } edges { source { key } target { key } weight } } }",
            ),
            (
                "2 allowed paths 3a -> 5b",
                '{ a: path(from: "InceptionV1 3a:1", to: "InceptionV1 5b:1") { score } '
                'b: path(from: "InceptionV1 3a:2", to: "InceptionV1 5b:2") { score } }',
            ),
        ):
            worst, took = health_while(base, query, 10)
            print(f"/health while 10 x {name}: worst {worst * 1000:.0f} ms over {took:.1f} s", flush=True)
        # one account, 20 tokens, 1,200 mutations
        import sqlalchemy as sa

        from kb.claims import accounts as acc
        from kb.settings import get_settings

        engine = sa.create_engine(get_settings().db_url)
        name = f"attacker-{secrets.token_hex(3)}"
        with engine.begin() as conn:
            acc.create_user(conn, name, "editor")
            tokens = [acc.create_token(conn, name) for _ in range(20)]
        mutation = 'mutation { reviewClaim(key: "claim:999999", verdict: SUPPORT) { revision } }'
        started = time.perf_counter()
        limited = 0
        with httpx.Client(timeout=30) as c:
            for i in range(1200):
                r = c.post(
                    f"{base}/graphql", json={"query": mutation}, headers={"authorization": f"Bearer {tokens[i % 20]}"}
                )
                limited += r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        print(
            f"1,200 mutations, one account, 20 tokens: {1200 - limited} passed the limit, {limited} RATE_LIMITED "
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        before = rss_mib(pid)
        host, p = base.removeprefix("http://").split(":")
        s = socket.create_connection((host, int(p)))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sent, started = 0, time.perf_counter()
        try:
            while sent < 10 << 20:
                s.sendall(b"X-Filler: " + b"a" * 8000 + b"\r\n")
                sent += 8012
        except OSError:
            pass
        s.settimeout(5)
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
        print(
            f"10 MB of headers: refused after {sent:,} B in {(time.perf_counter() - started) * 1000:.0f} ms "
            f"({answer[:32]!r}), RSS {rss_mib(pid) - before:+.1f} MiB",
            flush=True,
        )
        if args.slow:
            before = rss_mib(pid)
            left, last = slow_clients(base, 20, "silent", 70)
            print(f"20 silent half-sent requests: {left} open after 70 s, last closed at {last:.1f} s", flush=True)
            left, last = slow_clients(base, 200, "trickle", 60)
            print(
                f"200 trickling bodies: {left} open after 60 s, last closed at {last:.1f} s, "
                f"RSS {rss_mib(pid) - before:+.1f} MiB",
                flush=True,
            )
        print(f"RSS at the end: {rss_mib(pid):.0f} MiB ({rss_mib(pid) - start_rss:+.0f} MiB)")


if __name__ == "__main__":
    main()
