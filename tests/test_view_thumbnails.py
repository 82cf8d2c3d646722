"""Thumbnails that fill in as people browse (kb.render.view_lane, kb.web.thumbnails): pages ask for the thumbnail
preset's render of the cards they show without it, in the view lane, deduplicated and capped per model; the
cards show the preset's picture, or another feature visualization with a mark; workers take view work after
interactive work and before bulk work."""

from __future__ import annotations

import re
import secrets
from html import unescape

import pytest
import sqlalchemy as sa
from front_renders import land
from starlette.testclient import TestClient

from kb.db.catalog import load_catalog
from kb.db.render_tables import render_job_table
from kb.render import jobs, lanes, quota, thumbnails
from kb.render.jobs import Unit
from kb.render.params import RenderParams
from kb.render.view_lane import ask_for_thumbnails
from kb.settings import Settings

T = render_job_table


def _settings(engine, **kw) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    return Settings(database_url=url, **{"view_thumbnails": True, "view_queue_max": 300, **kw})


@pytest.fixture(scope="module")
def model(engine, tiny_arch, tmp_path_factory):
    """The tiny test network with weights of its own (renders belong to weights: none of other modules' count)."""
    import tiny
    import torch

    from kb.app.model_import import import_model

    net = tiny.build()
    with torch.no_grad():
        net.conv1.weight.mul_(1.0 + secrets.randbelow(1000) / 1000)
    path = tmp_path_factory.mktemp("view-weights") / "tiny.pt"
    torch.save(net.state_dict(), path)
    key = f"tinyview-{secrets.token_hex(3)}"
    import_model(engine, "test:tiny", key=key, weights=str(path))
    with engine.connect() as conn:
        sha = load_catalog(conn).model(key).sha256
    return {"key": key, "sha": sha}


@pytest.fixture
def fresh(engine, model):
    """No job of the module's model left from an earlier test; the model's six units."""
    with engine.begin() as conn:
        conn.execute(sa.delete(T).where(T.c.model_sha256 == model["sha"]))
    return [Unit(model["key"], model["sha"], layer, i) for layer in ("c1", "c2", "mixed") for i in (0, 1)]


def _rows(engine, sha: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(T).where(T.c.model_sha256 == sha).order_by(T.c.id)).all()


def test_a_view_asks_once_for_each_unit_without_the_preset(engine, model, fresh):
    s = _settings(engine)
    land(engine, model["key"], [("c1", 0)], thumbnails.preset_params(s))  # has its thumbnail: not asked
    asked = ask_for_thumbnails(engine, s, fresh + fresh[:2])  # a unit shown twice is asked once
    assert [(j["layer_key"], j["unit"]) for j in asked.queued] == [(u.layer_key, u.unit) for u in fresh[1:]]
    again = ask_for_thumbnails(engine, s, fresh)  # queued, running or done: not asked again
    assert again.queued == [] and again.capped == 0
    rows = _rows(engine, model["sha"])
    assert len(rows) == 6
    view = [r for r in rows if r.lane == "view"]
    assert len(view) == 5 and {r.status for r in view} == {"QUEUED"}
    assert all(r.requested_by is None and r.kind == "FEATURE_VIS" for r in view)
    assert all(r.params == thumbnails.preset_params(s) for r in rows)
    assert thumbnails.preset_params(s) == RenderParams(size=64, steps=16, seed=0).relevant("FEATURE_VIS")
    assert all(r.params_hash == thumbnails.preset_hash(s) for r in rows)


def test_a_failed_or_cancelled_thumbnail_is_not_asked_again_by_views(engine, model, fresh):
    s = _settings(engine)
    first = ask_for_thumbnails(engine, s, fresh[:2])
    with engine.begin() as conn:
        jobs.cancel(conn, [first.ids[0]])
        conn.execute(sa.update(T).where(T.c.id == first.ids[1]).values(status="FAILED", error="boom"))
    assert ask_for_thumbnails(engine, s, fresh[:2]).queued == []
    assert {r.status for r in _rows(engine, model["sha"])} == {"CANCELLED", "FAILED"}


def test_the_view_queue_of_a_model_is_capped(engine, model, fresh):
    s = _settings(engine, view_queue_max=4)
    asked = ask_for_thumbnails(engine, s, fresh)
    assert len(asked.queued) == 4 and asked.capped == 2  # as many as fit, in the order shown
    assert [(j["layer_key"], j["unit"]) for j in asked.queued] == [(u.layer_key, u.unit) for u in fresh[:4]]
    full = ask_for_thumbnails(engine, s, fresh)
    assert full.queued == [] and full.capped == 2  # beyond the cap: none
    with engine.begin() as conn:  # two of them finish (one running still counts)
        started = jobs.start(conn, asked.ids[:3], "test-worker", 60)
        assert len(started) == 3
        for j in started[:2]:
            jobs.land(conn, j["id"])
    more = ask_for_thumbnails(engine, s, fresh)
    assert [(j["layer_key"], j["unit"]) for j in more.queued] == [(u.layer_key, u.unit) for u in fresh[4:]]
    rows = _rows(engine, model["sha"])
    assert len(rows) == 6
    assert sum(r.status in ("QUEUED", "RUNNING") for r in rows) == 4


def test_views_at_once_cannot_pass_the_cap_or_ask_twice(engine, model, fresh):
    from concurrent.futures import ThreadPoolExecutor

    s = _settings(engine, view_queue_max=3)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: ask_for_thumbnails(engine, s, fresh), range(6)))
    rows = _rows(engine, model["sha"])
    assert len(rows) == 3, [(r.layer_key, r.unit) for r in rows]
    assert sum(len(r.queued) for r in results) == 3


def test_view_thumbnails_off_asks_for_nothing(engine, model, fresh):
    asked = ask_for_thumbnails(engine, _settings(engine, view_thumbnails=False), fresh)
    assert asked.queued == [] and _rows(engine, model["sha"]) == []


def test_view_jobs_do_not_count_against_the_readers_render_quota(engine, model, fresh, accounts):
    from kb.db.claim_tables import user_table

    with engine.connect() as conn:
        name = accounts["editor"]["name"]
        user = conn.execute(sa.select(user_table.c.id).where(user_table.c.name == name)).scalar_one()
    with engine.connect() as conn:
        before = quota.queued(conn, user)
    asked = ask_for_thumbnails(engine, _settings(engine), fresh, requester=user)
    assert len(asked.queued) == 6
    with engine.connect() as conn:
        assert quota.queued(conn, user) == before
    assert {r.requested_by for r in _rows(engine, model["sha"])} == {user}


def test_workers_take_view_work_after_interactive_and_before_bulk(engine, model, fresh):
    with engine.begin() as conn:  # only this test's jobs are due (earlier tests' are this module's own)
        conn.execute(sa.update(T).where(T.c.status.in_(("QUEUED", "RUNNING"))).values(status="CANCELLED"))
        p = RenderParams(size=32, steps=2).relevant("FEATURE_VIS")
        ids = {}
        for lane, unit in (("bulk", fresh[0]), ("view", fresh[2]), ("interactive", fresh[4])):
            (ids[lane],), _ = jobs.request(conn, [unit], "FEATURE_VIS", p, lane=lane)
    order = []
    for _ in range(3):
        with engine.begin() as conn:
            group = lanes.next_group(conn, 8)
            order.append(group[0]["lane"])
            jobs.start(conn, [j["id"] for j in group], "test-worker", 60)
    assert order == ["interactive", "view", "bulk"]


def test_a_batch_of_thumbnails_that_lands_is_one_activity_entry_naming_its_units(engine, model, fresh):
    from front_renders import picture

    from kb.claims import activity
    from kb.render import artifacts
    from kb.settings import get_settings

    asked = ask_for_thumbnails(engine, _settings(engine), fresh[:2])
    with engine.connect() as conn:
        before = activity.last_seq(conn)
    with engine.begin() as conn:
        started = jobs.start(conn, asked.ids, "test-worker", 60)
    assert artifacts.store(engine, get_settings(), started, [picture(j["id"]) for j in started]) == asked.ids
    with engine.connect() as conn:
        rows = [r for r in activity.after(conn, before) if r["kind"] == "RENDER"]
    assert [r["subject"] for r in rows] == [f"thumbnails:{asked.ids[0]}"], rows  # not one per picture
    assert rows[0]["neurons"] == [f"{model['key']}/c1:0", f"{model['key']}/c1:1"]  # what open pages swap in
    assert rows[0]["summary"] == "thumbnails of 2 units of c1 (feature_vis, size 64, steps 16)"


# --- the pages ------------------------------------------------------------------------------------------


@pytest.fixture
def site(engine, model):
    """An app whose pages ask (KB_VIEW_THUMBNAILS on), in-process: its background asks run before get() returns."""
    from kb.web.app import create_app

    app = create_app(_settings(engine), engine=engine, warm=False)
    with TestClient(app) as client:
        yield client


def _stream(html: str) -> str:
    m = re.search(r'<meta name="kb-live" content="([^"]+)"', html)
    assert m, html[:2000]
    return unescape(m.group(1))


def test_a_neuron_page_asks_for_its_own_and_its_cards_thumbnails(site, engine, model, fresh):
    key = f"{model['key']}/c2:0"
    r = site.get(f"/n/{model['key']}/c2/0")
    assert r.status_code == 200
    rows = _rows(engine, model["sha"])
    # its own unit first, then its inputs (c1) and outputs (mixed), in the order the page shows them
    assert (rows[0].layer_key, rows[0].unit) == ("c2", 0)
    assert {(x.layer_key, x.unit) for x in rows} == {("c2", 0), ("c1", 0), ("c1", 1), ("mixed", 0), ("mixed", 1)}
    assert {(x.lane, x.status, x.requested_by) for x in rows} == {("view", "QUEUED", None)}
    stream = _stream(r.text)  # it follows the renders of every unit it asked for, from before its data was read
    assert stream.startswith("/events?neuron=" + key.replace("/", "%2F").replace(":", "%3A"))
    for k in ("c1:0", "c1:1", "mixed:0", "mixed:1"):
        assert f"neuron={model['key']}%2F{k.replace(':', '%3A')}" in stream
    assert re.search(r"since=\d+", stream)
    assert r.text.count(f'data-thumb="{model["key"]}/c1:0"') == 2  # in the excitatory and by-magnitude tabs
    assert site.get(f"/n/{model['key']}/c2/0").status_code == 200
    assert len(_rows(engine, model["sha"])) == 5  # asked once


def test_cards_show_the_preset_else_a_marked_fallback(site, engine, model, fresh):
    s = _settings(engine)
    land(engine, model["key"], [("c1", 0)], thumbnails.preset_params(s))
    land(engine, model["key"], [("c1", 1)], RenderParams(size=32, steps=8).relevant("FEATURE_VIS"))
    html = site.get(f"/n/{model['key']}/c1").text
    first = re.search(rf'data-thumb="{model["key"]}/c1:0">(.*?)<span class="key">', html, re.S).group(1)
    second = re.search(rf'data-thumb="{model["key"]}/c1:1">(.*?)<span class="key">', html, re.S).group(1)
    assert "<img" in first and "fallback" not in first, first
    assert "<img" in second and 'class="fallback"' in second, second
    assert "not the thumbnail preset: a render with size 32, steps 8, seed 0" in second and ">32px<" in second
    # the fallback's unit is asked for its preset render; the preset's is not
    assert {(x.layer_key, x.unit, x.lane) for x in _rows(engine, model["sha"]) if x.lane == "view"} == {
        ("c1", 1, "view")
    }


def test_a_failed_ask_never_fails_the_page_and_the_next_view_asks_again(site, engine, model, fresh, monkeypatch):
    import kb.web.thumbnails as web_thumbnails

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    with monkeypatch.context() as m:
        m.setattr(web_thumbnails, "ask_for_thumbnails", broken)
        r = site.get(f"/n/{model['key']}/mixed")
        assert r.status_code == 200 and 'class="ph"' in r.text
    assert _rows(engine, model["sha"]) == []
    assert site.get(f"/n/{model['key']}/mixed").status_code == 200
    assert {(x.layer_key, x.unit) for x in _rows(engine, model["sha"])} == {("mixed", 0), ("mixed", 1)}
    assert "kind=render" not in _stream(site.get(f"/n/{model['key']}/mixed").text)  # two units: named


def test_pages_ask_for_nothing_when_view_thumbnails_are_off(engine, model, fresh):
    from kb.web.app import create_app

    app = create_app(_settings(engine, view_thumbnails=False), engine=engine, warm=False)
    with TestClient(app) as client:
        for path in (f"/n/{model['key']}/c2/0", f"/n/{model['key']}/c1", "/"):
            r = client.get(path)
            assert r.status_code == 200
            assert "since=" not in r.text
    assert _rows(engine, model["sha"]) == []
