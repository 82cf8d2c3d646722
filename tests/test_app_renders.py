"""kb.app.renders, the use cases the API, the pages and the CLI share, on the real database: a request saves typed
jobs (kb.render.jobs.Job) and asking again returns the same ones; a key, data set or kind that does not fit is
refused with its code before anything is saved; who asked may cancel, anyone else is FORBIDDEN with nothing
cancelled. No worker runs: the jobs stay QUEUED until cancelled (conftest fails any left over)."""

import dataclasses
import os
import re
import secrets
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from kb.app import renders
from kb.claims import accounts as acc
from kb.errors import Problem
from kb.graph.keys import KeyProblem
from kb.render.jobs import LAYER_UNIT, Job
from kb.render.params import RenderParams
from kb.render.requests import RenderProblem
from kb.settings import Settings

SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}


@pytest.fixture(scope="module")
def settings(engine):
    return Settings(database_url=str(engine.url.render_as_string(hide_password=False)))


@pytest.fixture(scope="module")
def editors(engine, inceptionv1):
    """Two editors; at the end their jobs are deleted and the broker's messages for them dropped."""
    ids = []
    with engine.begin() as conn:
        for _ in range(2):
            ids.append(acc.create_user(conn, f"app-renders-{secrets.token_hex(3)}", "editor"))
    yield ids
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM render_job WHERE requested_by IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    redis.Redis.from_url(os.environ["KB_BROKER_URL"]).flushdb()


def _params(**extra) -> RenderParams:
    return RenderParams(**{**SMALL, "seed": secrets.randbelow(2**30), **extra})  # a seed of its own: a job of its own


def test_request_then_cancel(engine, settings, editors):
    me, other = editors
    units = renders.units_of(engine, ["InceptionV1 4b:79", "inceptionv1/mixed4b:80"])
    assert [(u.model_key, u.layer_key, u.unit) for u in units] == [
        ("inceptionv1", "mixed4b", 79),
        ("inceptionv1", "mixed4b", 80),
    ]
    asked = renders.request_renders(engine, settings, units, "FEATURE_VIS", _params(), requester=me)
    assert asked.lane == "interactive"
    assert all(isinstance(j, Job) for j in asked.rows)
    assert [(j.unit, j.status, j.requested_by, j.lane) for j in asked.rows] == [
        (79, "QUEUED", me, "interactive"),
        (80, "QUEUED", me, "interactive"),
    ]
    assert sorted(asked.queued) == sorted(j.id for j in asked.rows)
    with pytest.raises(dataclasses.FrozenInstanceError):
        asked.rows[0].status = "DONE"  # type: ignore[misc]
    ids = [j.id for j in asked.rows]

    with pytest.raises(RenderProblem) as refused:  # someone else's: nothing cancelled
        renders.cancel_renders(engine, ids, by=other, moderator=False)
    assert refused.value.code == "FORBIDDEN"
    assert [j.status for j in renders.get_jobs(engine, ids)] == ["QUEUED", "QUEUED"]
    with pytest.raises(RenderProblem) as missing:
        renders.cancel_renders(engine, [*ids, 2**31 - 1], by=me, moderator=False)
    assert missing.value.code == "NOT_FOUND"

    cancelled = renders.cancel_renders(engine, [ids[1], ids[0], ids[1]], by=me, moderator=False)
    assert [(j.id, j.status, j.error) for j in cancelled] == [
        (ids[1], "CANCELLED", "cancelled"),
        (ids[0], "CANCELLED", "cancelled"),
    ]
    assert [j.status for j in renders.cancel_renders(engine, ids, by=me, moderator=False)] == ["CANCELLED"] * 2


def test_the_same_request_is_the_same_job(engine, settings, editors):
    me, other = editors
    params = _params()
    units = renders.units_of(engine, ["InceptionV1 4b:81"])
    first = renders.request_renders(engine, settings, units, "FEATURE_VIS", params, requester=me)
    again = renders.request_renders(engine, settings, units, "FEATURE_VIS", params, requester=other)
    assert [j.id for j in again.rows] == [j.id for j in first.rows]
    assert first.queued == [first.rows[0].id] and again.queued == []
    assert again.rows[0].requested_by == me  # still theirs: nothing was queued again
    renders.cancel_renders(engine, first.queued, by=None, moderator=True)
    # cancelled, asked again: queued afresh, now the asker's
    third = renders.request_renders(engine, settings, units, "FEATURE_VIS", params, requester=other)
    assert [j.id for j in third.rows] == [first.rows[0].id] and third.queued == [first.rows[0].id]
    assert (third.rows[0].status, third.rows[0].requested_by) == ("QUEUED", other)
    renders.cancel_renders(engine, third.queued, by=other, moderator=False)


def test_a_layer_picture_is_one_job_of_the_layer(engine, settings, editors):
    me, _ = editors
    unit = renders.layer_of(engine, "mixed4b", model="InceptionV1")
    assert (unit.model_key, unit.layer_key, unit.unit) == ("inceptionv1", "mixed4b", LAYER_UNIT)
    asked = renders.request_layer_render(engine, settings, unit, "DEEPDREAM", _params(), requester=me)
    [job] = asked.rows
    assert (job.kind, job.unit, job.lane) == ("DEEPDREAM", LAYER_UNIT, "interactive")
    with pytest.raises(RenderProblem, match="a layer's picture is one of"):
        renders.request_layer_render(engine, settings, unit, "FEATURE_VIS", _params(), requester=me)
    renders.cancel_renders(engine, [job.id], by=me, moderator=False)


@pytest.mark.parametrize(
    ("neurons", "code"),
    [(["InceptionV1 4b:99999"], "NOT_FOUND"), (["nomodel/mixed4b:1"], "NOT_FOUND"), (["4b:1"], "BAD_KEY")],
)
def test_a_bad_unit_is_refused_with_its_code(engine, inceptionv1, neurons, code):
    with pytest.raises(KeyProblem) as refused:
        renders.units_of(engine, neurons)
    assert refused.value.code == code


def test_what_cannot_be_rendered_saves_nothing(engine, settings, editors):
    me, _ = editors
    units = renders.units_of(engine, ["InceptionV1 4b:82"])
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT COUNT(*) FROM render_job")).scalar_one()
    refusals = [
        ("DATASET_EXAMPLES", _params(dataset="no-such-dataset"), "NOT_FOUND"),
        ("DEEPDREAM", _params(), "BAD_INPUT"),  # a layer's picture asked of a unit
        ("FEATURE_VIS", _params(size=10**6), "BAD_INPUT"),
    ]
    for kind, params, code in refusals:
        with pytest.raises(Problem) as refused:  # RenderProblem, or kb.render.params' BadParams
            renders.request_renders(engine, settings, units, kind, params, requester=me)
        assert refused.value.code == code, kind
    with pytest.raises(RenderProblem, match="name neurons or a layer"):
        renders.request_renders(engine, settings, [], "FEATURE_VIS", _params(), requester=me)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM render_job")).scalar_one() == before


def test_the_cli_runs_no_sql_of_its_own_for_renders():
    """`kb render` reads and writes through kb.app.renders: no connection, no statement, no table of its own."""
    source = (Path(__file__).parent.parent / "kb" / "cli" / "render.py").read_text()
    assert not re.search(r"\.connect\(|\.begin\(|\.execute\(|kb\.db\b|render_job_table|load_catalog", source)
