"""`kb serve` as the README starts it: a real uvicorn process answering the README's example."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kb_serve_answers_the_readme_example(db_url, inceptionv1):
    port = free_port()
    exe = Path(sys.executable).parent / "kb"
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], env={**os.environ, "KB_DATABASE_URL": db_url},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and proc.poll() is None, "kb serve did not start"
            time.sleep(0.3)
        query = """{ neuron(key: "InceptionV1 4c:447") { key pinnedKey
            inputs(first: 5, orderBy: WEIGHT) { edges { weight magnitude node { key } } } } }"""
        r = httpx.post(f"{base}/graphql", json={"query": query}, timeout=120)
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        n = body["data"]["neuron"]
        assert n["key"] == "inceptionv1/mixed4c:447" and len(n["inputs"]["edges"]) == 5
        assert all(e["node"]["key"].startswith("inceptionv1/mixed4b:") for e in n["inputs"]["edges"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
