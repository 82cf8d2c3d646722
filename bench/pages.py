"""Server time of the pages: p50 and p99 of the neuron, layer, explore and circuit pages on InceptionV1, beside
the same GraphQL query alone for the neuron and explore pages (the baseline: what the page adds is templates and
pictures; for explore, the diagram's layout at depth 3, perNode 5).

Runs the app in-process (Starlette's TestClient: no network, no uvicorn), after one warm-up pass, over units
picked at random (seeded). Uses the database in KB_DATABASE_URL when it holds inceptionv1; otherwise imports
it with seeded random weights into a temporary SQLite file first (about two minutes).

    .venv/bin/python bench/pages.py [--n 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit


def percentiles(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    return statistics.median(s) * 1000, s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="requests per page kind")
    args = ap.parse_args()

    tmp = None
    url = os.environ.get("KB_DATABASE_URL")
    if not url:
        tmp = tempfile.mkdtemp(prefix="kb-bench-pages-")
        url = f"sqlite:///{tmp}/kb.sqlite"
    os.environ["KB_DATABASE_URL"] = url

    from starlette.testclient import TestClient

    from kb.claims import accounts
    from kb.db import migrate
    from kb.db.engine import engine_for
    from kb.settings import Settings
    from kb.web import pages as P
    from kb.web.app import create_app
    from kb.web.circuit_pages import EXPLORE

    migrate.upgrade(url)
    engine = engine_for(url)
    app = create_app(Settings(database_url=url), engine=engine, warm=False)
    if "inceptionv1" not in {r["key"] for r in app.state.graphs.model_rows()}:
        print("importing lucent:inceptionv1 (random weights)...", file=sys.stderr)
        kb = Path(sys.executable).with_name("kb")
        cmd = [str(kb), "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0"]
        subprocess.run(cmd, check=True, env={**os.environ, "KB_DATABASE_URL": url})
        app = create_app(Settings(database_url=url), engine=engine, warm=False)
    app.state.graphs.warm()
    client = TestClient(app)

    with engine.begin() as conn:
        name = f"bench-{random.randrange(10**6)}"
        accounts.create_user(conn, name, "editor")
        token = accounts.create_token(conn, name)
    made = client.post(
        "/graphql",
        headers={"authorization": f"Bearer {token}"},
        json={
            "query": "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
            "variables": {
                "i": {
                    "name": "bench",
                    "edges": [
                        {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447"},
                        {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:447"},
                        {"source": "InceptionV1 4a:1", "target": "InceptionV1 4b:373"},
                    ],
                }
            },
        },
    ).json()
    circuit = made["data"]["createCircuit"]["key"]

    rng = random.Random(0)
    layers = [
        (layer["key"], layer["units"])
        for layer in client.post(
            "/graphql", json={"query": '{ model(key: "inceptionv1") { layers { key units } } }'}
        ).json()["data"]["model"]["layers"]
    ]
    inner = [(k, u) for k, u in layers[1:]]  # layers with inputs

    def neuron():
        key, units = rng.choice(inner)
        return key + ":" + str(rng.randrange(units))

    def path(key: str) -> str:
        layer, index = key.rsplit(":", 1)
        return f"/n/{layer}/{index}"

    def explore_query(url: str) -> tuple[str, dict]:
        q = dict(parse_qsl(urlsplit(url).query))
        variables = {"roots": [q["roots"]], "direction": "UPSTREAM", "depth": int(q["depth"])}
        variables["perNode"] = int(q["perNode"])
        if "$sign" in EXPLORE:  # the page's own choice of edges (a checkout before it had none)
            variables.update(sign="POSITIVE", orderBy="WEIGHT")
        return EXPLORE, variables

    kinds = {
        "neuron": (lambda: path(neuron()), lambda u: (P.NEURON, {"k": u})),
        "layer": (lambda: "/n/" + rng.choice(layers)[0], None),
        "explore": (lambda: f"/explore?roots={neuron()}&depth=3&perNode=5", explore_query),
        "circuit": (lambda: "/circuits/" + circuit.split(":")[1], None),
    }
    print(f"{args.n} requests per page, in-process, {os.cpu_count()} CPUs, database {url.split(':')[0]}")
    print(f"{'page':10} {'p50 ms':>8} {'p99 ms':>8}   {'query p50':>9} {'query p99':>9}   page/query p50")
    for kind, (make, query) in kinds.items():
        urls = [make() for _ in range(args.n)]
        for u in urls[:5]:
            client.get(u)  # warm-up
        times, qtimes = [], []
        for u in urls:
            t = time.perf_counter()
            r = client.get(u)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, (u, r.status_code, r.text[:300])
            if query:
                q, v = query(u)
                t = time.perf_counter()
                client.post("/graphql", json={"query": q, "variables": v})
                qtimes.append(time.perf_counter() - t)
        p50, p99 = percentiles(times)
        if qtimes:
            q50, q99 = percentiles(qtimes)
            print(f"{kind:10} {p50:8.1f} {p99:8.1f}   {q50:9.1f} {q99:9.1f}   {p50 / q50:.2f}")
        else:
            print(f"{kind:10} {p50:8.1f} {p99:8.1f}")
    if tmp:
        engine.dispose()


if __name__ == "__main__":
    main()
