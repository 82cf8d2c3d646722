"""The pages' render controls at the HTTP level (kb.web.render_forms, kb.web.render_controls): a unit's render with
a chosen kind and preset from the neuron page, a whole layer's from the layer page (the bulk lane, its progress,
Cancel for who asked and moderators), refusals shown beside the form, and GraphiQL carrying the session's CSRF
token. No render worker runs here: the jobs stay queued until they are cancelled (or the module's end fails them)."""

import html
import json
import re
import secrets

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from test_annotate_web import ORIGIN, csrf, signed_in

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.db.render_tables import dataset_table
from kb.db.tables import utcnow
from kb.render.params import params_hash
from kb.render.presets import presets
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
NEURON = "/n/inceptionv1/mixed4c/12"
LAYER = "/n/inceptionv1/conv2d1"  # 64 units
JSON = {**ORIGIN, "accept": "application/json"}


def _app(engine, **settings):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(
        Settings(database_url=url, public_url="http://testserver", **settings), engine=engine, warm=False
    )
    application.state.graphs.warm()
    return application


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    return _app(engine)


@pytest.fixture(scope="module")
def people(engine):
    suffix = secrets.token_hex(3)
    out = {}
    with engine.begin() as conn:
        for who, role in (("amy", "editor"), ("ben", "editor"), ("mod", "moderator"), ("vic", "viewer")):
            name = f"rf-{who}-{suffix}"
            acc.create_user(conn, name, role)
            sessions.set_password(conn, name, PASSWORD)
            out[who] = name
    return out


def _job(engine, job_id: int) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT kind, layer_key, unit, params, lane, status FROM render_job WHERE id = :i"), {"i": job_id}
        ).one()
    params = row.params if isinstance(row.params, dict) else json.loads(row.params)
    return {**row._asdict(), "params": params}


THUMBNAIL = params_hash("FEATURE_VIS", presets(Settings())["thumbnail"].params.relevant("FEATURE_VIS"))


def _thumbnails(engine, layer: str) -> dict[str, int]:
    """The layer's thumbnail-preset feature visualizations by status (other modules may have rendered some)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT status, count(*) FROM render_job WHERE layer_key = :l AND params_hash = :h "
                "AND kind = 'FEATURE_VIS' GROUP BY status"
            ),
            {"l": layer, "h": THUMBNAIL},
        )
        return dict(rows.all())


def _cancel(engine, ids):
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE render_job SET status = 'CANCELLED' WHERE id IN :ids AND status = 'QUEUED'").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )


def _request(part: str, request_id: str) -> str:
    """One request's line in the layer's renders part."""
    found = re.search(rf'<div class="layer-request" data-request="{re.escape(request_id)}">(.*?)</div>', part, re.S)
    assert found, part
    return found[1]


def test_a_unit_rendered_with_a_chosen_kind_and_preset(app, people, engine):
    amy, vic = signed_in(app, people["amy"]), signed_in(app, people["vic"])
    page = amy.get(NEURON).text
    assert 'name="kind"' in page and 'name="preset"' in page
    assert "Microscope (128 px, 512 steps)" in page and "Negative feature visualization" in page
    with engine.connect() as conn:  # no data set added (other modules may have): no dataset examples to choose
        datasets = conn.execute(sa.select(sa.func.count()).select_from(dataset_table)).scalar_one()
    assert ('value="dataset"' in page) == (datasets > 0)
    assert 'name="preset"' not in vic.get(NEURON).text  # a viewer gets no form
    made = []
    for kind, preset, want_kind, want in (
        ("feature", "thumbnail", "FEATURE_VIS", {"size": 64, "steps": 16, "negative": False}),
        ("negative", "microscope", "FEATURE_VIS", {"size": 128, "steps": 512, "negative": True}),
        ("neuron", "thumbnail", "NEURON_VIS", {"size": 64, "steps": 16, "negative": False}),
    ):
        r = amy.post(NEURON + "/render", data={"csrf": csrf(amy), "kind": kind, "preset": preset}, headers=JSON)
        assert r.status_code == 200, r.text
        (job,) = r.json()["jobs"]
        assert job["lane"] == "INTERACTIVE"
        row = _job(engine, job["id"])
        assert (row["kind"], row["layer_key"], row["unit"]) == (want_kind, "mixed4c", 12)
        assert {k: row["params"][k] for k in want} == want
        made.append(job["id"])
    plain = amy.post(
        NEURON + "/render", data={"csrf": csrf(amy), "kind": "feature", "preset": "thumbnail"}, headers=ORIGIN
    )
    assert plain.status_code == 303 and plain.headers["location"] == NEURON + "#renders"
    # refused: an unknown choice, on the page beside the form (the choice kept), or as JSON for the script
    bad = amy.post(NEURON + "/render", data={"csrf": csrf(amy), "kind": "negative", "preset": "huge"}, headers=ORIGIN)
    assert bad.status_code == 400
    assert re.search(
        r'id="render-status"[^>]*class="error"[^>]*>preset must be one of thumbnail, microscope<', bad.text
    )
    assert '<option value="negative" selected>' in bad.text
    bad = amy.post(NEURON + "/render", data={"csrf": csrf(amy), "kind": "weird"}, headers=JSON)
    assert bad.status_code == 400 and bad.json()["error"].startswith("kind must be one of feature, negative")
    viewer = vic.post(NEURON + "/render", data={"csrf": csrf(vic), "kind": "feature"}, headers=JSON)
    assert viewer.status_code == 403 and "editor" in viewer.json()["error"]
    _cancel(engine, made)


def test_dataset_examples_are_offered_once_a_data_set_exists(app, people, engine, tmp_path):
    name = f"rf-images-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        conn.execute(sa.insert(dataset_table).values(name=name, path=str(tmp_path), images=4, created_at=utcnow()))
    amy = signed_in(app, people["amy"])
    page = amy.get(NEURON).text
    assert '<option value="dataset">Dataset examples</option>' in page and f'<option value="{name}"' in page
    r = amy.post(NEURON + "/render", data={"csrf": csrf(amy), "kind": "dataset", "dataset": name}, headers=JSON)
    assert r.status_code == 200, r.text
    row = _job(engine, r.json()["jobs"][0]["id"])
    assert row["kind"] == "DATASET_EXAMPLES" and row["params"]["dataset"] == name
    missing = amy.post(NEURON + "/render", data={"csrf": csrf(amy), "kind": "dataset", "dataset": "nope"}, headers=JSON)
    assert missing.status_code == 404 and "no dataset 'nope'" in missing.json()["error"]
    _cancel(engine, [r.json()["jobs"][0]["id"]])


def test_ceilings_and_quota_are_shown_on_the_page(engine, inceptionv1, people):
    low = _app(engine, render_max_steps=100, render_queue_quota=10)
    amy = signed_in(low, people["amy"])
    form = {"csrf": csrf(amy), "kind": "feature", "preset": "microscope"}
    r = amy.post(NEURON + "/render", data=form, headers=ORIGIN)
    assert r.status_code == 400
    status = re.search(r'<span id="render-status"[^>]*>([^<]*)<', r.text)[1]
    ceiling = "steps 512 is above this knowledge base's ceiling: KB_RENDER_MAX_STEPS=100"
    assert html.unescape(status) == ceiling
    r = amy.post(NEURON + "/render", data=form, headers=JSON)  # what the page's script shows
    assert r.status_code == 400 and r.json() == {"error": ceiling}
    r = amy.post(LAYER + "/render", data={"csrf": csrf(amy), "preset": "thumbnail"}, headers=ORIGIN)
    assert r.status_code == 400, r.text
    status = html.unescape(re.search(r'<span id="layer-render-status"[^>]*>([^<]*)<', r.text)[1])
    assert status.startswith("render quota: this account has") and "KB_RENDER_QUEUE_QUOTA=10" in status, status
    assert "QUEUED" not in _thumbnails(engine, "conv2d1")  # refused whole: nothing queued


def test_a_layer_rendered_from_its_page_and_cancelled(app, people, engine):
    anon = TestClient(app, follow_redirects=False)
    page = anon.get(LAYER).text
    assert (
        'href="/signin?next=/n/inceptionv1/conv2d1"' in page and "sign-in on these pages is still to come" not in page
    )
    assert (
        "requestRender(kind: FEATURE_VIS, layer: &#34;inceptionv1/conv2d1&#34;, params: { size: 64, steps: 16 })"
        in page
    )
    assert "Render this layer</button>" not in page
    vic = signed_in(app, people["vic"])
    assert "needs the editor role; you are a viewer" in vic.get(LAYER).text
    amy, ben, mod = (signed_in(app, people[w]) for w in ("amy", "ben", "mod"))
    page = amy.get(LAYER).text
    assert "Render this layer</button>" in page and "data-poll" not in page
    r = amy.post(LAYER + "/render", data={"csrf": csrf(amy), "preset": "thumbnail"}, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == LAYER + "#render-layer"
    states = _thumbnails(engine, "conv2d1")
    done, queued = states.get("DONE", 0), states.get("QUEUED", 0)
    assert done + queued == 64 and queued > 32 and set(states) <= {"DONE", "QUEUED"}, states
    with engine.connect() as conn:
        lanes = conn.execute(
            sa.text(
                "SELECT DISTINCT lane FROM render_job "
                "WHERE layer_key = 'conv2d1' AND params_hash = :h AND status = 'QUEUED'"
            ),
            {"h": THUMBNAIL},
        )
        assert lanes.scalars().all() == ["bulk"]
    request_id = f"FEATURE_VIS:{THUMBNAIL}"
    part = amy.get(LAYER + "/renders").text  # what the page's script polls
    mine = _request(part, request_id)
    assert "data-poll" in part and f"{done} of 64</strong> rendered · {queued} queued" in mine
    assert "Feature visualization, Thumbnail (64 px, 16 steps)" in mine and ">Cancel</button>" in mine
    assert ">Cancel</button>" not in _request(ben.get(LAYER + "/renders").text, request_id)  # not his
    assert ">Cancel</button>" in _request(mod.get(LAYER + "/renders").text, request_id)  # a moderator may
    assert f'name="request" value="{request_id}"' in mine
    refused = ben.post(LAYER + "/cancel", data={"csrf": csrf(ben), "request": request_id}, headers=JSON)
    assert refused.status_code == 403 and "only who asked" in refused.json()["error"]
    cancelled = amy.post(LAYER + "/cancel", data={"csrf": csrf(amy), "request": request_id}, headers=JSON)
    assert cancelled.status_code == 200 and cancelled.json() == {"cancelled": queued}
    assert _thumbnails(engine, "conv2d1").get("CANCELLED") == queued
    mine = _request(amy.get(LAYER + "/renders").text, request_id)
    assert f"{done} of 64</strong> rendered · {queued} cancelled · ended" in mine and ">Cancel</button>" not in mine
    ended = amy.post(LAYER + "/cancel", data={"csrf": csrf(amy), "request": request_id}, headers=ORIGIN)
    assert ended.status_code == 409 and "it has ended" in ended.text
    # Ben asks for the layer again (the cancelled jobs are queued afresh, his now): a moderator cancels them
    again = ben.post(LAYER + "/render", data={"csrf": csrf(ben), "preset": "thumbnail"}, headers=JSON)
    assert again.status_code == 200 and again.json() == {"jobs": 64}
    assert _thumbnails(engine, "conv2d1").get("QUEUED") == queued
    by_mod = mod.post(LAYER + "/cancel", data={"csrf": csrf(mod), "request": request_id}, headers=ORIGIN)
    assert by_mod.status_code == 303 and by_mod.headers["location"] == LAYER + "#render-layer"
    assert _thumbnails(engine, "conv2d1").get("CANCELLED") == queued
    no_csrf = amy.post(LAYER + "/render", data={"preset": "thumbnail"}, headers=ORIGIN)
    assert no_csrf.status_code == 403


def test_graphiql_carries_the_sessions_csrf_token(app, people):
    amy = signed_in(app, people["amy"])
    ide = amy.get("/graphql", headers={"accept": "text/html"})
    assert ide.status_code == 200 and "graphiql-init.js" in ide.text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', ide.text)[1]
    assert token == csrf(amy) and ide.headers["cache-control"] == "private, no-store"
    answer = amy.post(
        "/graphql",
        json={"query": 'mutation { requestRender(kind: WEIGHTS, neurons: ["InceptionV1 3b:9"]) { id status } }'},
        headers={**ORIGIN, "x-csrf-token": token},
    ).json()
    assert "errors" not in answer, answer
    anon = TestClient(app).get("/graphql", headers={"accept": "text/html"})
    assert 'name="csrf-token"' not in anon.text and "private" not in anon.headers.get("cache-control", "")
