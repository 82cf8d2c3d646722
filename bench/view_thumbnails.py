"""What asking for thumbnails as people browse (kb.web.thumbnails, kb.render.view_lane) costs a page: the server
time of the neuron and layer pages of InceptionV1 with KB_VIEW_THUMBNAILS off (the baseline) beside the same
pages with it on, for a first view (every card lacks its thumbnail: the view asks for them all, ~60 jobs on a
neuron page, and sends them to the broker) and a repeat view (all asked already: one query finds nothing
missing). Side by side in one run, interleaved, on the same units.

Runs the app in-process (Starlette's TestClient, which runs a response's background task, the asking, before it
returns: the times include it, though a browser gets the page before it runs). The database is a temporary SQLite
file with InceptionV1 (seeded random weights, imported first: about a minute), the broker the embedded SQLite
one; no worker runs, so asked jobs stay queued (KB_VIEW_QUEUE_MAX is raised so that no view is capped).

    .venv/bin/python bench/view_thumbnails.py [--n 40]
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


def p50(times: list[float]) -> float:
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="units per page kind")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kb-bench-view-")
    url = f"sqlite:///{tmp}/kb.sqlite"
    os.environ.update(KB_DATABASE_URL=url, KB_DATA_DIR=tmp, KB_BROKER_URL="")

    from starlette.testclient import TestClient

    from kb.db import migrate
    from kb.db.engine import engine_for
    from kb.settings import Settings
    from kb.web.app import create_app

    migrate.upgrade(url)
    engine = engine_for(url)
    print("importing lucent:inceptionv1 (random weights)...", file=sys.stderr)
    kb = Path(sys.executable).with_name("kb")
    cmd = [str(kb), "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0"]
    subprocess.run(cmd, check=True, env=os.environ, stdout=subprocess.DEVNULL)

    def client(on: bool) -> TestClient:
        settings = Settings(database_url=url, data_dir=Path(tmp), view_thumbnails=on, view_queue_max=1_000_000)
        app = create_app(settings, engine=engine, warm=False)
        app.state.graphs.warm()
        return TestClient(app)

    off, on = client(False), client(True)
    query = '{ model(key: "inceptionv1") { layers { key units } } }'
    found = on.post("/graphql", json={"query": query}).json()["data"]["model"]["layers"]
    layers = {r["key"]: r for r in found}
    rng = random.Random(0)
    keys = list(layers)
    units = [(k, rng.randrange(layers[k]["units"])) for k in rng.choices(keys[1:-1], k=args.n)]
    for c in (off, on):  # warm-up: templates, graphs, plans
        c.get("/n/inceptionv1/mixed3a/0")
    print(f"{args.n} views per page and setting, in-process, {os.cpu_count()} CPUs, database sqlite, embedded broker")
    print("page     views        off p50 ms   on p50 ms   on/off")
    for page in ("neuron", "layer"):
        paths = (
            [f"/n/{k}/{i}" for k, i in units]
            if page == "neuron"
            else [f"/n/{k}" for k in dict.fromkeys(k for k, _ in units)][: max(3, args.n // 8)]
        )
        times: dict[str, list[float]] = {"off": [], "first": [], "repeat": []}
        for path in paths:  # interleaved: off, on (first view: asks), on again (repeat view: all asked)
            for name, c in (("off", off), ("first", on), ("repeat", on)):
                t0 = time.perf_counter()
                r = c.get(path)
                times[name].append(time.perf_counter() - t0)
                assert r.status_code == 200, (path, r.status_code)
        base = p50(times["off"])
        for name in ("first", "repeat"):
            print(f"{page:8} {name:8} {base:12.1f} {p50(times[name]):11.1f}   {p50(times[name]) / base:.2f}")
    with engine.connect() as conn:
        asked = conn.exec_driver_sql("SELECT count(*) FROM render_job WHERE lane = 'view'").scalar()
    print(f"view jobs asked for: {asked}")


if __name__ == "__main__":
    main()
