"""The embedded default: `kb serve` with no broker configured runs the same Celery tasks through a local
worker on kombu's SQLAlchemy transport (a SQLite file), not eager mode."""

import os

import httpx
from servers import kb_serve
from waits import poll

from kb.claims import accounts as acc


def test_serve_renders_with_its_own_worker(db_url, engine, inceptionv1, tmp_path):
    with engine.begin() as conn:
        acc.create_user(conn, f"embedded-{os.getpid()}", "editor")
        token = acc.create_token(conn, f"embedded-{os.getpid()}")
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(tmp_path / "artifacts"),
        "KB_RENDER_DEVICE": "cpu",
    }
    with kb_serve(env) as base:
        q = """mutation { requestRender(kind: FEATURE_VIS, neurons: ["InceptionV1 3a:9"],
                 params: {size: 32, steps: 3, upsample: 0, seed: 99}) { id } }"""
        r = httpx.post(f"{base}/graphql", json={"query": q}, headers={"authorization": f"Bearer {token}"}, timeout=60)
        assert "errors" not in r.json(), r.json()
        job_id = r.json()["data"]["requestRender"][0]["id"]
        job = poll(
            lambda: httpx.post(
                f"{base}/graphql",
                json={
                    "query": "query($i: [Int!]!) { renderJobs(ids: $i) { status error artifact { url } } }",
                    "variables": {"i": [job_id]},
                },
                timeout=60,
            ).json()["data"]["renderJobs"][0],
            lambda job: job["status"] in ("DONE", "FAILED"),
            180,
            f"render job {job_id} to end (kb serve's local worker)",
            0.5,
        )
        assert job["status"] == "DONE", job
        png = httpx.get(base + "/artifacts/" + job["artifact"]["url"].split("/artifacts/")[1], timeout=30)
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        assert (tmp_path / "data" / "broker.sqlite").exists()  # the embedded broker, not eager mode
