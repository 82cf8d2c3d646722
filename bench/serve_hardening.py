"""The figures tests/test_serve_hardening.py does not assert: how soon a slow client is cut off against its
setting, and how long /health and a neighbour query take while expensive queries run, against the same requests
to the idle server (the baseline, in the same run).

Needs a database with InceptionV1 imported (KB_DATABASE_URL; `kb import lucent:inceptionv1 --weights random`).
Starts one `kb serve` with the test's settings (KB_HEADER_TIMEOUT_S=1, KB_BODY_TIMEOUT_S=2, no per-address query
limit), prints one line per figure and `uptime` before and after, stops the server.

    KB_DATABASE_URL=sqlite:///kb.sqlite python bench/serve_hardening.py [--seconds 6] [--clients 4]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import threading
import time

import httpx
from kb_server import running

HEADER_S, BODY_S = 1.0, 2.0
EXPENSIVE = (
    '{ a: path(from: "InceptionV1 3a:1", to: "InceptionV1 5b:1") { score } '
    'b: path(from: "InceptionV1 3a:2", to: "InceptionV1 5b:2") { score } }'
)
NEIGHBORS = (
    "query($k: String!) { neuron(key: $k) { key inputs(first: 10) { edges { weight magnitude node { key } } } } }"
)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cut_off_after(base: str, first: bytes, trickle: bool) -> tuple[float, bytes]:
    """(seconds from the first bytes until the server closed, what it sent): a request that stops after ``first``,
    or (``trickle``) goes on sending a byte every 0.1 s."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(first)
    started = time.perf_counter()
    got = b""
    s.settimeout(0.1 if trickle else 30)
    try:
        while time.perf_counter() - started < 30:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                s.sendall(b" ")
                continue
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    took = time.perf_counter() - started
    s.close()
    return took, got


def cheap_requests(base: str, seconds: float) -> list[float]:
    """Durations of /health and neighbour requests sent one after the other for ``seconds``."""
    took = []
    with httpx.Client(timeout=60) as c:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            t = time.perf_counter()
            assert c.get(f"{base}/health").status_code == 200
            took.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = c.post(f"{base}/graphql", json={"query": NEIGHBORS, "variables": {"k": "InceptionV1 4c:447"}})
            took.append(time.perf_counter() - t)
            assert r.status_code == 200 and "errors" not in r.json(), r.text[:300]
    return took


def under_load(base: str, seconds: float, clients: int) -> tuple[list[float], list[float]]:
    """(cheap request durations, expensive query durations) while ``clients`` threads send expensive queries."""
    expensive: list[float] = []
    started = threading.Barrier(clients + 1)
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=120) as c:
            started.wait()
            while not stop.is_set():
                t = time.perf_counter()
                c.post(f"{base}/graphql", json={"query": EXPENSIVE})
                expensive.append(time.perf_counter() - t)

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    started.wait()
    cheap = cheap_requests(base, seconds)
    stop.set()
    for t in threads:
        t.join()
    return cheap, expensive


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e3 if len(values) > 1 else values[0] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each latency series runs")
    parser.add_argument("--clients", type=int, default=4, help="threads sending expensive queries")
    args = parser.parse_args()
    print(uptime(), flush=True)
    env = {"KB_HEADER_TIMEOUT_S": str(HEADER_S), "KB_BODY_TIMEOUT_S": str(BODY_S), "KB_QUERY_RATE_LIMIT": ""}
    with running(env) as (base, _):
        httpx.post(f"{base}/graphql", json={"query": EXPENSIVE}, timeout=120)  # warm: the first path query
        took, got = cut_off_after(base, b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Ty", trickle=False)
        print(
            f"half-sent headers: cut off after {took:.2f} s "
            f"(KB_HEADER_TIMEOUT_S {HEADER_S:g}: x{took / HEADER_S:.2f}), answered {got[:12]!r}",
            flush=True,
        )
        body = b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
        took, _ = cut_off_after(base, body, trickle=True)
        print(
            f"trickling body (a byte every 0.1 s): cut off after {took:.2f} s "
            f"(KB_BODY_TIMEOUT_S {BODY_S:g}: x{took / BODY_S:.2f})",
            flush=True,
        )
        idle = cheap_requests(base, args.seconds)
        loaded, expensive = under_load(base, args.seconds, args.clients)
        print(
            f"/health and a neighbour query, idle server (baseline): {len(idle)} requests, median "
            f"{ms(idle, 50):.1f} ms, p90 {ms(idle, 90):.1f} ms",
            flush=True,
        )
        print(
            f"the same while {args.clients} clients send expensive path queries ({len(expensive)} done, "
            f"{min(expensive):.2f}-{max(expensive):.2f} s each): {len(loaded)} requests, "
            f"median {ms(loaded, 50):.1f} ms (x{ms(loaded, 50) / ms(idle, 50):.1f} the idle median), "
            f"p90 {ms(loaded, 90):.1f} ms",
            flush=True,
        )
    print(uptime())


if __name__ == "__main__":
    main()
