"""What a layer page's script fetches while a layer render is open: the renders part alone
(/n/MODEL/LAYER/renders) beside the whole layer page (the baseline: what live.js would fetch without it), p50 and
p99 server time for a signed-in editor whose layer render is queued, on InceptionV1's 512- and 1024-unit layers.

Runs the app in-process (Starlette's TestClient), after a warm-up. Uses the database in KB_DATABASE_URL when it
holds inceptionv1; otherwise imports it with seeded random weights into a temporary SQLite file first. The layer
requests it makes are cancelled after each layer (no worker runs; an account's quota is 1,024 queued units).

    .venv/bin/python bench/layer_poll.py [--n 100]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS = ("inceptionv1/mixed4c", "inceptionv1/mixed5b")
PASSWORD = "correct horse battery"
ORIGIN = {"origin": "http://testserver"}


def percentiles(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    return statistics.median(s) * 1000, s[min(len(s) - 1, int(len(s) * 0.99))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="requests per page and layer")
    args = ap.parse_args()
    url = os.environ.get("KB_DATABASE_URL")
    if not url:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='kb-bench-poll-')}/kb.sqlite"
    os.environ["KB_DATABASE_URL"] = url

    from starlette.testclient import TestClient

    from kb.claims import accounts, sessions
    from kb.db import migrate
    from kb.db.engine import engine_for
    from kb.settings import Settings
    from kb.web.app import create_app

    migrate.upgrade(url)
    engine = engine_for(url)
    settings = Settings(database_url=url, public_url="http://testserver")
    app = create_app(settings, engine=engine, warm=False)
    if "inceptionv1" not in {r["key"] for r in app.state.graphs.model_rows()}:
        print("importing lucent:inceptionv1 (random weights)...", file=sys.stderr)
        kb = Path(sys.executable).with_name("kb")
        cmd = [str(kb), "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0"]
        subprocess.run(cmd, check=True, env={**os.environ, "KB_DATABASE_URL": url})
        app = create_app(settings, engine=engine, warm=False)
    app.state.graphs.warm()

    name = f"bench-poll-{random.randrange(10**6)}"
    with engine.begin() as conn:
        accounts.create_user(conn, name, "editor")
        sessions.set_password(conn, name, PASSWORD)
    client = TestClient(app, follow_redirects=False)
    signin = client.get("/signin").text
    token = re.search(r'action="/signin"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', signin)[1]
    form = {"csrf": token, "next": "/account", "name": name, "password": PASSWORD}
    assert client.post("/signin", data=form, headers=ORIGIN).status_code == 303
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").text)[1]

    print(f"{args.n} requests each, in-process, {os.cpu_count()} CPUs, database {url.split(':')[0]}")
    print(f"{'layer':22} {'renders p50':>11} {'p99':>7}   {'page p50':>8} {'p99':>7}   page/renders p50")
    asked = []
    try:
        for layer in LAYERS:
            r = client.post(f"/n/{layer}/render", data={"csrf": csrf, "preset": "thumbnail"}, headers=ORIGIN)
            assert r.status_code == 303, re.search(r'id="layer-render-status"[^>]*>([^<]*)<', r.text)
            part = client.get(f"/n/{layer}/renders").text
            assert "data-poll" in part, part[:500]
            asked.append((layer, re.search(r'name="request" value="([^"]+)"', part)[1]))
            result = {}
            for what, path in (("renders", f"/n/{layer}/renders"), ("page", f"/n/{layer}")):
                for _ in range(5):
                    client.get(path)  # warm-up
                times = []
                for _ in range(args.n):
                    t = time.perf_counter()
                    r = client.get(path)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200
                result[what] = percentiles(times)
            client.post(f"/n/{layer}/cancel", data={"csrf": csrf, "request": asked[-1][1]}, headers=ORIGIN)
            (r50, r99), (p50, p99) = result["renders"], result["page"]
            print(f"{layer:22} {r50:11.1f} {r99:7.1f}   {p50:8.1f} {p99:7.1f}   {p50 / r50:.1f}")
    finally:
        for layer, request_id in asked:  # what an interrupted run left queued (nothing, after a whole run)
            client.post(f"/n/{layer}/cancel", data={"csrf": csrf, "request": request_id}, headers=ORIGIN)
        engine.dispose()


if __name__ == "__main__":
    main()
