"""Render quotas: the flood of issue 23 (whole layers at the largest parameters, a new seed each time) is refused
after the account's queue quota with nothing beyond it queued; the parameter ceilings refuse; a request counts
its units against the rate limit; every job records who asked, shown to moderators only.

No worker runs here: the jobs stay QUEUED, and every job (and broker message) this module made is removed at
the end, so that no later test's worker picks up a maximum-cost render."""

import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from conftest import as_user

from kb.claims import accounts as acc
from kb.db.catalog import load_catalog
from kb.render import jobs
from kb.settings import Settings

REQUEST = """mutation($kind: RenderKind!, $n: [String!], $layer: String, $p: RenderParamsInput) {
    requestRender(kind: $kind, neurons: $n, layer: $layer, params: $p) { id status } }"""
LARGEST = {"size": 512, "steps": 4096, "upsample": 512}
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}
WHO = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id requestedBy { name } } }"


@pytest.fixture(scope="module")
def made(engine):
    """Accounts made by this module; at the end their jobs are deleted and the broker's queue emptied."""
    ids: list[int] = []

    def account(role: str = "editor") -> dict:
        name = f"quota-{role}-{secrets.token_hex(3)}"
        with engine.begin() as conn:
            ids.append(acc.create_user(conn, name, role))
            return {"id": ids[-1], "name": name, "token": acc.create_token(conn, name)}

    yield account
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM render_job WHERE requested_by IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    redis.Redis.from_url(os.environ["KB_BROKER_URL"]).flushdb()  # their messages (and rate counters: harmless)


@pytest.fixture(scope="module")
def strict(engine, inceptionv1):
    """The API with low ceilings, two seeds per unit and a rate limit of 10 mutations per 10 minutes."""
    from starlette.testclient import TestClient

    from kb.web.app import create_app

    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        render_max_size=256,
        render_max_steps=1000,
        render_max_upsample=224,
        render_max_seeds=2,
        rate_limit_per_minute=1,
        rate_limit_burst=10,
    )
    with TestClient(create_app(settings, engine=engine, warm=False)) as client:
        yield client


def _code(answer: dict) -> str | None:
    errors = answer.get("errors") or []
    return errors[0]["extensions"]["code"] if errors else None


def _mine(engine, user_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM render_job WHERE requested_by = :u"), {"u": user_id}).scalar()


def test_the_flood_is_refused_after_the_quota_and_nothing_beyond_it_is_queued(api, engine, made):
    """Issue 23: requestRender of a whole layer at the largest parameters, a new seed each time, at the default
    settings (a quota of 1024 unit-jobs): the request that would pass the quota is refused and queues nothing."""
    quota = Settings().render_queue_quota
    with engine.connect() as conn:
        units = load_catalog(conn).model("inceptionv1").layer("mixed4c").units
    allowed = quota // units
    assert allowed >= 1 and (allowed + 1) * units > quota
    flooder = made()
    answers = [
        as_user(
            api,
            flooder["token"],
            REQUEST,
            {"kind": "FEATURE_VIS", "layer": "InceptionV1 4c", "p": {**LARGEST, "seed": 1000 + i}},
        )
        for i in range(allowed + 2)
    ]
    for a in answers[:allowed]:
        assert len(a["data"]["requestRender"]) == units, a
    for a in answers[allowed:]:
        assert _code(a) == "LIMIT_EXCEEDED", a
        assert "KB_RENDER_QUEUE_QUOTA" in a["errors"][0]["message"], a
    assert _mine(engine, flooder["id"]) == allowed * units <= quota
    with engine.connect() as conn:  # the refused seeds made no job at all
        refused = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs.render_job_table)
            .where(
                jobs.render_job_table.c.params["seed"].as_integer() >= 1000 + allowed,
                jobs.render_job_table.c.params["seed"].as_integer() < 1000 + allowed + 2,
                jobs.render_job_table.c.params["size"].as_integer() == 512,
            )
        ).scalar_one()
    assert refused == 0
    # what is already queued is returned, not counted again: asking the first layer again still answers
    again = as_user(
        api,
        flooder["token"],
        REQUEST,
        {"kind": "FEATURE_VIS", "layer": "InceptionV1 4c", "p": {**LARGEST, "seed": 1000}},
    )
    assert len(again["data"]["requestRender"]) == units, again


def test_concurrent_requests_of_one_account_cannot_overshoot_its_quota(engine, inceptionv1, made):
    """Four requests of 300 new unit-jobs at once against a quota of 600: two are queued, two refused."""
    from kb.render.quota import Quota, QuotaExceeded

    user = made()
    with engine.connect() as conn:
        model = load_catalog(conn).model("inceptionv1")
    units = [jobs.Unit(model.key, model.sha256, "mixed3b", i) for i in range(300)]
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def ask(seed: int) -> None:
        start.wait(timeout=60)
        try:
            with engine.begin() as conn:
                jobs.request(conn, units, "FEATURE_VIS", {**SMALL, "seed": seed}, user["id"], Quota(queued=600))
            outcomes.append("queued")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=ask, args=(5000 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(outcomes) == ["queued", "queued", "refused", "refused"], outcomes
    assert _mine(engine, user["id"]) == 600


def test_parameters_above_the_ceilings_are_refused(strict, made):
    ed = made()["token"]
    for name, value, setting in (
        ("size", 512, "KB_RENDER_MAX_SIZE=256"),
        ("steps", 4096, "KB_RENDER_MAX_STEPS=1000"),
        ("upsample", 512, "KB_RENDER_MAX_UPSAMPLE=224"),
    ):
        a = as_user(
            strict, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 4b:77"], "p": {**SMALL, name: value}}
        )
        assert _code(a) == "LIMIT_EXCEEDED" and setting in a["errors"][0]["message"], a
        assert a["errors"][0]["extensions"]["ceiling"] == setting.split("=")[0], a
    at = as_user(strict, ed, REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 4b:77"], "p": {**SMALL, "size": 256}})
    assert at["data"]["requestRender"][0]["status"] == "QUEUED", at


def test_a_unit_gets_at_most_the_ceiling_of_distinct_seeds(strict, made):
    ed = made()["token"]

    def ask(seed: int) -> dict:
        return as_user(
            strict, ed, REQUEST, {"kind": "NEURON_VIS", "n": ["InceptionV1 4b:78"], "p": {**SMALL, "seed": seed}}
        )

    first, second = ask(1)["data"]["requestRender"], ask(2)["data"]["requestRender"]
    third = ask(3)
    assert _code(third) == "LIMIT_EXCEEDED" and "KB_RENDER_MAX_SEEDS=2" in third["errors"][0]["message"], third
    assert ask(1)["data"]["requestRender"] == first  # a seed it has is returned, not refused
    assert ask(2)["data"]["requestRender"] == second


def test_a_request_counts_its_units_against_the_rate_limit(strict, made):
    """10 mutations per window and 64 units to a mutation: 256 units cost 4, so the third request of them is
    refused (before: each request counted once, and ten went through)."""
    ed = made()["token"]
    keys = [f"InceptionV1 5a:{i}" for i in range(256)]
    answers = [
        as_user(strict, ed, REQUEST, {"kind": "FEATURE_VIS", "n": keys, "p": {**SMALL, "seed": 9}}) for _ in range(3)
    ]
    assert [_code(a) for a in answers] == [None, None, "RATE_LIMITED"], answers


def test_the_requester_is_recorded_and_shown_to_moderators_only(api, engine, made, accounts):
    editor, moderator = made(), made("moderator")
    job = as_user(api, editor["token"], REQUEST, {"kind": "FEATURE_VIS", "n": ["InceptionV1 4b:79"], "p": SMALL})
    job_id = job["data"]["requestRender"][0]["id"]
    with engine.connect() as conn:
        assert jobs.get(conn, [job_id])[0].requested_by == editor["id"]
    for who in (moderator["token"], accounts["admin"]["token"]):
        seen = as_user(api, who, WHO, {"ids": [job_id]})
        assert seen["data"]["renderJobs"] == [{"id": job_id, "requestedBy": {"name": editor["name"]}}], seen
    for who, code in ((editor["token"], "FORBIDDEN"), (None, "UNAUTHENTICATED")):
        hidden = as_user(api, who, WHO, {"ids": [job_id]})
        assert _code(hidden) == code, hidden
        assert hidden["data"]["renderJobs"] == [{"id": job_id, "requestedBy": None}], hidden


def test_the_cli_refuses_parameters_above_the_ceilings(db_url, inceptionv1, tmp_path):
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": db_url, "KB_DATA_DIR": str(tmp_path), "KB_RENDER_MAX_STEPS": "100"}
    r = subprocess.run(
        [str(exe), "render", "InceptionV1 4b:80", "--kind", "FEATURE_VIS", "--steps", "4096"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: steps 4096 is above"), r.stderr
    assert "KB_RENDER_MAX_STEPS=100" in r.stderr, r.stderr
