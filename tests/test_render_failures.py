"""How a render attempt's failure is judged: permanent only when named (the unit or the kind is invalid: it ends
FAILED at once, saying which), anything else retried up to the job's cap. Runs kb.render.runner in this process
against the session's database, without a broker."""

import sqlalchemy as sa
from conftest import as_user

from kb.render import runner
from kb.settings import Settings

REQUEST = """mutation($n: [String!], $p: RenderParamsInput) {
    requestRender(kind: FEATURE_VIS, neurons: $n, params: $p) { id status } }"""
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}


def _job(api, accounts, seed: int) -> int:
    asked = as_user(
        api, accounts["editor"]["token"], REQUEST, {"n": ["InceptionV1 3a:30"], "p": {**SMALL, "seed": seed}}
    )
    return asked["data"]["requestRender"][0]["id"]


def _row(engine, job_id: int):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT status, attempts, error, next_attempt_at FROM render_job WHERE id = :i"), {"i": job_id}
        ).one()


def test_a_unit_outside_its_layer_fails_at_once_and_says_so(api, accounts, engine, db_url):
    job_id = _job(api, accounts, 880_001)
    with engine.begin() as conn:  # as a bundle or an old row could carry: the request path refuses such a unit
        conn.execute(sa.text("UPDATE render_job SET unit = 99999 WHERE id = :i"), {"i": job_id})
    outcome = runner.run([job_id], worker="test", settings=Settings(database_url=db_url))
    assert outcome.failed == [job_id] and outcome.retry == []
    row = _row(engine, job_id)
    assert (row.status, row.attempts) == ("FAILED", 1)
    assert row.error.startswith("InvalidUnit: ") and "no unit 99999" in row.error, row.error


def test_an_unnamed_error_is_retried_not_failed(api, accounts, engine, db_url, monkeypatch):
    """A KeyError or ValueError from the work used to end the job at once; now only InvalidUnit/InvalidKind do."""
    job_id = _job(api, accounts, 880_002)

    def broken(*args, **kwargs):
        raise KeyError("a transient lookup")

    monkeypatch.setattr(runner, "pictures", broken)
    outcome = runner.run([job_id], worker="test", settings=Settings(database_url=db_url))
    assert outcome.failed == [] and outcome.retry == [(job_id, 1)]
    row = _row(engine, job_id)
    assert (row.status, row.attempts) == ("QUEUED", 1)
    assert row.error.startswith("KeyError: ") and row.next_attempt_at is not None
