"""Run by tests/test_render_lanes.py in a process of its own (the embedded default: KB_BROKER_URL empty).

For each round, two processes forked from this one send the first message to a fresh data folder's embedded
broker at the same moment (a barrier), through kb.render.enqueue. Prints one JSON line per round: how many
senders failed (and why) and how many messages the broker holds."""

import json
import multiprocessing
import os
import sqlite3
import sys
import traceback
from pathlib import Path


def sender(url: str, barrier, unit: int) -> None:
    from kb.render.celery_app import make_celery
    from kb.render.enqueue import enqueue
    from kb.settings import Settings

    app = make_celery(Settings(broker_url=url))  # this round's fresh data folder (nothing connected before the fork)
    barrier.wait(timeout=60)
    try:
        job = {"id": unit, "model_sha256": "m", "layer_key": "l", "kind": "FEATURE_VIS", "params_hash": "h"}
        enqueue([job], app=app)
    except Exception:
        sys.stderr.write(traceback.format_exc(limit=3))
        os._exit(1)
    os._exit(0)


def main(root: str, rounds: int) -> None:
    import kb.render.celery_app
    import kb.render.enqueue  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    for r in range(rounds):
        folder = Path(root) / f"round-{r}"
        folder.mkdir(parents=True)
        url = f"sqla+sqlite:///{folder / 'broker.sqlite'}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=sender, args=(url, barrier, u)) for u in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        failed = sum(p.exitcode != 0 for p in procs)
        try:
            with sqlite3.connect(folder / "broker.sqlite") as db:
                messages = db.execute("SELECT count(*) FROM kombu_message").fetchone()[0]
        except sqlite3.Error as exc:
            messages = f"unreadable: {exc}"
        print(json.dumps({"round": r, "failed": failed, "messages": messages}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
