"""A fresh `kb serve`: time to its first neighbour query per model, and each server process's memory, with the
serving graph files (this checkout) beside a baseline checkout that builds each graph in memory.

Against an existing database (KB_DATABASE_URL) whose models are imported; KB_DATA_DIR holds the graph files.
For each code and model: start `kb serve --workers W`, wait for /health, send the model's first neighbour
query and time it; then, with every model loaded, read RSS, PSS and private memory of each server process
(/proc/PID/smaps_rollup: mapped graph pages are shared, so PSS splits them between the processes). Usage:

    KB_DATABASE_URL=... KB_DATA_DIR=... python bench/first_query.py --models inceptionv1 vgg16 [--workers 2]
        [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUERY = "{ neuron(key: $key) { key inputs(first: 10) { edges { weight node { key } } } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_unit(base: str, model: str) -> str:
    r = httpx.post(
        f"{base}/graphql", json={"query": f'{{ model(key: "{model}") {{ layers {{ key }} }} }}'}, timeout=600
    )
    layers = r.json()["data"]["model"]["layers"]
    return f"{layers[len(layers) // 2]['key']}:0"  # a layer key is model/layer


def memory(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        out[name] = int(value.split()[0]) // 1024
    return {"rss": out["Rss"], "pss": out["Pss"], "private": out["Private_Clean"] + out["Private_Dirty"]}


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def serve(code: Path, workers: int, models: list[str]) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "kb", "serve", "--port", str(port), "--workers", str(workers), "--no-render-worker"]
    proc = subprocess.Popen(cmd, env=env, cwd=code, start_new_session=True, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        up = time.perf_counter() - t0
        for model in models:
            key = first_unit(base, model)
            t = time.perf_counter()
            r = httpx.post(f"{base}/graphql", json={"query": QUERY.replace("$key", f'"{key}"')}, timeout=600)
            first = time.perf_counter() - t
            assert (r.json().get("data") or {}).get("neuron"), r.text
            t = time.perf_counter()
            httpx.post(f"{base}/graphql", json={"query": QUERY.replace("$key", f'"{key}"')}, timeout=600)
            second = time.perf_counter() - t
            print(f"  {model:<12} first neighbour query {first:7.3f} s (next {second:.3f} s; /health after {up:.1f} s)")
        deadline = time.time() + 900  # every worker has every model (each warms them at start)
        while time.time() < deadline:
            loaded = [
                httpx.get(f"{base}/health", timeout=60).json().get("graphs_loaded", 0) for _ in range(4 * workers)
            ]
            if min(loaded) >= len(models):
                break
            time.sleep(1)
        health = httpx.get(f"{base}/health", timeout=60).json()
        for g in health.get("graphs", []):
            print(f"  /health: {g['model']} {g['edges']:,} edges, {g['bytes'] / 2**20:.0f} MB, file {g['file']}")
        spawned = [p for p in children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        pids = spawned or [proc.pid]  # uvicorn's worker processes, or the one server process
        for pid in pids:
            m = memory(pid)
            print(f"  process {pid}: RSS {m['rss']} MB, PSS {m['pss']} MB, private {m['private']} MB")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["inceptionv1"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline", type=Path)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}; {os.cpu_count()} CPUs")
    for label, code in [("this (graph files)", here)] + (
        [("baseline", args.baseline.resolve())] if args.baseline else []
    ):
        print(f"{label}: kb serve --workers {args.workers}")
        serve(code, args.workers, args.models)
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
