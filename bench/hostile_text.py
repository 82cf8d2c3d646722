"""Hostile text (issue 23, items 1 and 2) against a real `kb serve`: for each input at its size limit, the page's
first view and second view, and the slowest /health answer while each view ran; then the old code's work on
the same kind of input at sizes where it still ends (the old pre-pass regex, the old unbounded difflib).

Uses the database in KB_DATABASE_URL when it holds inceptionv1; otherwise imports it with seeded random weights
into a temporary SQLite file first (about a minute). Starts one `kb serve` on a free port of 127.0.0.1.

    .venv/bin/python bench/hostile_text.py
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

KB_BIN = Path(sys.executable).with_name("kb")
OLD_A = re.compile(r"""<a\s[^>]*?href\s*=\s*(['"])(.*?)\1[^>]*>(.*?)</a\s*>""", re.I | re.S)  # before issue 23


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def at(unit: str, chars: int) -> str:
    return unit * (chars // len(unit))


def hostile_pair(chars: int) -> tuple[str, str]:
    """A hundred distinct short lines, in another order in each version (difflib's bad case)."""
    n, k = chars // 3, 100
    before = "".join(f"{i % k:02d}\n" for i in range(n))
    after = "".join(f"{(k - 1 - i) % k:02d}\n" for i in range(n))
    return before[:chars], after[:chars]


def view(base: str, path: str) -> tuple[float, float, int]:
    """(seconds for GET path, max /health latency meanwhile, status)."""
    worst, done = 0.0, threading.Event()

    def poll() -> None:
        nonlocal worst
        with httpx.Client(timeout=120) as c:
            while not done.is_set():
                started = time.perf_counter()
                c.get(f"{base}/health")
                worst = max(worst, time.perf_counter() - started)
                done.wait(0.02)  # a probe every 20 ms

    t = threading.Thread(target=poll)
    t.start()
    started = time.perf_counter()
    r = httpx.get(f"{base}{path}", timeout=120)
    elapsed = time.perf_counter() - started
    done.set()
    t.join()
    return elapsed, worst, r.status_code


def gql(base: str, token: str, query: str, variables: dict) -> dict:
    r = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}"},
        timeout=120,
    ).json()
    assert "errors" not in r, r
    return r["data"]


def main() -> None:
    tmp = None
    url = os.environ.get("KB_DATABASE_URL")
    if not url:
        tmp = tempfile.mkdtemp(prefix="kb-bench-hostile-")
        url = f"sqlite:///{tmp}/kb.sqlite"
    env = {**os.environ, "KB_DATABASE_URL": url}

    from kb.claims import accounts
    from kb.claims.circuits import MAX_DESCRIPTION
    from kb.claims.content import MAX_BODY
    from kb.db import migrate
    from kb.db.engine import engine_for
    from kb.serving.graph_cache import GraphCache

    migrate.upgrade(url)
    engine = engine_for(url)
    if "inceptionv1" not in {r["key"] for r in GraphCache(engine).model_rows()}:
        print("importing lucent:inceptionv1 (random weights)...", file=sys.stderr)
        cmd = [str(KB_BIN), "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0"]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with engine.begin() as conn:
        name = f"bench-{secrets.token_hex(3)}"
        accounts.create_user(conn, name, "editor")
        token = accounts.create_token(conn, name)

    port = free_port()
    proc = subprocess.Popen(
        [str(KB_BIN), "serve", "--port", str(port)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # wait for the server to answer (a deadline, not a fixed sleep)
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("kb serve did not start")
            time.sleep(0.2)
        run(base, token, MAX_BODY, MAX_DESCRIPTION)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    old(MAX_BODY)


CLAIM = "mutation($i: ClaimInput!) { createClaim(input: $i) { key } }"
EDIT = (
    """mutation($k: String!, $p: ClaimPatch!) { updateClaim(key: $k, expectedRevision: 1, patch: $p) { revision } }"""
)
CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"
EDIT_CIRCUIT = """mutation($k: String!, $r: Int!, $p: CircuitPatch!) {
  updateCircuit(key: $k, expectedRevision: $r, patch: $p, message: "") { revision } }"""


def run(base: str, token: str, max_body: int, max_description: int) -> None:
    print(f"{'input':58s} {'1st view':>9s} {'health':>8s} {'2nd view':>9s} {'health':>8s}")

    def show(label: str, path: str) -> None:
        first, h1, s1 = view(base, path)
        second, h2, s2 = view(base, path)
        print(f"{label:58s} {first:8.3f}s {h1:7.3f}s {second:8.3f}s {h2:7.3f}s  ({s1}, {s2})", flush=True)

    def claim(body: str) -> str:
        i = {"label": "hostile", "kind": "FAMILY", "subjects": ["InceptionV1 3b:1"], "body": body}
        return gql(base, token, CLAIM, {"i": i})["createClaim"]["key"]

    for label, unit in (
        ('body <a href="x"> x 8,333', '<a href="x">'),
        ("body <code> x 16,666", "<code>"),
        ("body <a href='x'><code> x 5,555", "<a href='x'><code>"),
        ("body [ x 100,000 (markdown-it)", "["),
        ("body *a x 50,000 (markdown-it)", "*a"),
    ):
        key = claim(at(unit, max_body - 8) + secrets.token_hex(4))
        show(f"{label} ({max_body:,} chars) /c/N", f"/c/{key.split(':')[1]}")

    edge = [{"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447"}]
    desc = at('<a href="x">', max_description - 10) + secrets.token_hex(4)
    key = gql(base, token, CIRCUIT, {"i": {"name": "hostile", "description": desc, "edges": edge}})["createCircuit"]
    show(f'description <a href="x"> ({max_description:,} chars) /circuits/N', f"/circuits/{key['key'].split(':')[1]}")

    a, b = hostile_pair(max_description)
    key = gql(base, token, CIRCUIT, {"i": {"name": "diff", "description": a, "edges": edge}})["createCircuit"]["key"]
    gql(base, token, EDIT_CIRCUIT, {"k": key, "r": 1, "p": {"description": b}})
    gql(base, token, EDIT_CIRCUIT, {"k": key, "r": 2, "p": {"description": a + "x"}})
    show(f"3 revisions, hostile diffs ({max_description:,} chars) /circuits/N", f"/circuits/{key.split(':')[1]}")

    a, b = hostile_pair(max_body)
    key = claim(a)
    gql(base, token, EDIT, {"k": key, "p": {"body": b}})
    show(f"claim body, hostile diff ({max_body:,} chars) /c/N/2", f"/c/{key.split(':')[1]}/2")
    six = "{ claim(key: $k) { " + " ".join(f"d{i}: diff(from: 1, to: 2) {{ tooLarge }}" for i in range(6)) + " } }"
    started = time.perf_counter()
    data = gql(base, token, "query($k: String!) " + six, {"k": key})
    print(
        f"{'six aliased claim diffs (GraphQL), tooLarge=' + str(data['claim']['d0'][0]['tooLarge']):58s} "
        f"{time.perf_counter() - started:8.3f}s",
        flush=True,
    )


def old(max_body: int) -> None:
    """The old code's work on the same inputs, at sizes where it ends (CPU seconds of this process)."""
    print("\nbefore issue 23 (in this process; the server's inputs above are larger):")
    for chars in (1_200, 2_400, 4_800):
        body = at('<a href="x">', chars)
        started = time.process_time()
        OLD_A.sub("", body)
        print(
            f'  old pre-pass regex, <a href="x"> x {chars // 12:,} ({chars:,} chars): '
            f"{time.process_time() - started:.3f}s"
        )
    for chars in (3_000, 6_000, 12_000):
        a, b = hostile_pair(chars)
        started = time.process_time()
        "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True)))
        print(f"  old difflib, hostile pair of {chars:,} chars: {time.process_time() - started:.3f}s")
    print(f"  (each doubling: about x8 for both; the body limit is {max_body:,} characters)")


if __name__ == "__main__":
    main()
