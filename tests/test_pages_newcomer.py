"""What a new user hit on the pages (issue 24, item 7) and the activity feed's entries (item 6): keys that break
only between their parts, weights with the digits that tell a list apart, evidence cards with one picture, the
Cite block swapped in live, no Support/Dispute for a claim's authors and a reviewer's own verdict shown back,
random weights said as they are, counts in good grammar, /explore's form shown again with the refusal and its
inputs within the budget, /activity filtered by kind, and a bulk render request as one entry."""

import re
import secrets
import threading

import pytest
import sqlalchemy as sa
from conftest import as_user, gql
from front_renders import picture
from stores import store_for
from test_annotate_web import NEURON, ORIGIN, app, claim_row, csrf, people, propose, signed_in  # noqa: F401

from kb.claims import activity
from kb.render import images, jobs
from kb.web.live.hub import Filter
from kb.web.live.routes import link

CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key revision } }"""
UPDATE = """mutation($key: String!, $r: Int!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: $r, patch: $patch, message: "sharper") { revision } }"""


def _artifact(engine, kind: str, params: dict) -> dict:
    """A stored PNG of its own (other modules' pages show what lands here: the front page's strip loads it)."""
    data = images.png(picture(secrets.randbelow(2**31), 128))
    return {
        "sha256": store_for(engine).put(data, ".png"),
        "content_type": "image/png",
        "bytes": len(data),
        "width": 128,
        "height": 128,
        "kind": kind,
        "params": params,
        "versions": {},
        "meta": {},
    }


def _sha(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT sha256 FROM model WHERE key = 'inceptionv1'")).scalar_one()


def _land(engine, job_id: int, artifact: dict) -> None:
    with engine.begin() as conn:
        assert jobs.start(conn, [job_id], "test", 60)
    with engine.begin() as conn:
        jobs.finish(conn, job_id, artifact)


# --- keys, weights, evidence ------------------------------------------------------------------------------------


def test_weights_get_the_digits_that_tell_them_apart():
    from kb.web.templating import weight_texts

    assert weight_texts([0.00312, 0.00307, 0.003, -0.0029]) == ["+0.00312", "+0.00307", "+0.00300", "-0.00290"]
    assert weight_texts([0.0031, 0.00305]) == ["+0.00310", "+0.00305"]
    assert weight_texts([0.123456, 0.123457]) == ["+0.123456", "+0.123457"]  # up to six digits
    assert weight_texts([0.5, -2.25]) == ["+0.500", "-2.25"]
    assert weight_texts([0.0000123]) == ["+1.23e-05"] and weight_texts([0.0]) == ["0"]


def test_neuron_page_weights_are_told_apart_and_keys_break_only_between_parts(api):
    """The old '%+.3f' showed equal text for different weights in some list of these units; the page must not."""
    q = """query($k: String!) { neuron(key: $k) { inputs(first: 10, orderBy: WEIGHT, sign: POSITIVE) {
        edges { weight } } } }"""
    coarse = None
    for index in range(40):  # the first unit whose ten strongest inputs read alike at three decimals
        weights = [
            e["weight"] for e in gql(api, q, {"k": f"InceptionV1 4c:{index}"})["data"]["neuron"]["inputs"]["edges"]
        ]
        if len({f"{w:+.3f}" for w in weights}) < len(set(weights)):
            coarse = (index, weights)
            break
    assert coarse, "no unit of 40 has inputs that '%+.3f' cannot tell apart: the check would prove nothing"
    index, weights = coarse
    page = api.get(f"/n/inceptionv1/mixed4c/{index}").text
    panel = page[page.index('id="panel-in-excite"') :]
    panel = panel[: panel.index('role="tabpanel"', 10)]
    shown = re.findall(r'<span class="num">([^<]+)</span>', panel)
    assert len(shown) == len(weights) and len(set(shown)) == len(set(weights)), shown
    for text, w in zip(shown, weights, strict=True):
        assert abs(float(text) - w) <= abs(w) * 0.01, (text, w)
    # a card's key breaks only after its separators, never inside the layer's name or the unit's number
    assert re.search(r'<span class="key" title="inceptionv1/mixed4b:\d+">mixed4b:<wbr>\d+</span>', page)


def test_an_evidence_card_shows_the_cited_picture_once_with_its_key_whole(api, accounts, engine):
    sha = _sha(engine)
    with engine.begin() as conn:
        (job_id,), _ = jobs.request(
            conn,
            [jobs.Unit("inceptionv1", sha, "mixed4c", 447)],
            "FEATURE_VIS",
            {"size": 9999, "n": secrets.token_hex(3)},
        )
    art = _artifact(engine, "FEATURE_VIS", {"size": 9999})
    _land(engine, job_id, art)  # the unit's thumbnail (its largest render) is the very image the claim cites
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {
            "input": {
                "label": "car detector with a long label that a narrow card would cut",
                "kind": "FEATURE",
                "subjects": ["InceptionV1 4c:447"],
                "evidence": [
                    {
                        "kind": "FEATURE_VISUALIZATION",
                        "neuron": "InceptionV1 4c:447",
                        "visualization": f"sha256:{art['sha256']}",
                    }
                ],
            }
        },
    )["data"]["createClaim"]
    page = api.get(f"/c/{made['key'].split(':')[1]}").text
    evidence = page[page.index('<ul class="evidence">') :]
    evidence = evidence[: evidence.index("</ul>\n</li>") if "</ul>\n</li>" in evidence else evidence.index("</li>")]
    assert evidence.count(f"/artifacts/{art['sha256']}.png") == 1, evidence  # once: not the card's and again below
    assert '<span class="key" title="inceptionv1/mixed4c:447">mixed4c:<wbr>447</span>' in evidence  # no break in 447


# --- authors, reviewers, the Cite block -----------------------------------------------------------------------------


def test_authors_get_no_review_buttons_and_reviewers_see_their_own_review(app, people, engine):  # noqa: F811
    amy, ben = signed_in(app, people["amy"]), signed_in(app, people["ben"])
    label = f"own review {secrets.token_hex(3)}"
    assert propose(amy, {"label": label}).status_code == 303
    n = claim_row(engine, label).id
    for page in (amy.get(f"/c/{n}").text, amy.get(NEURON).text):  # the author: no Support / Dispute, and why
        assert f'id="review-{n}"' not in page and "its authors cannot review it" in page
    assert f'id="review-{n}"' in ben.get(f"/c/{n}").text and f'id="review-{n}"' in ben.get(NEURON).text
    done = ben.post(
        f"/c/{n}/review",
        data={"csrf": csrf(ben), "verdict": "DISPUTE", "comment": "not on the weights"},
        headers=ORIGIN,
    )
    assert done.status_code == 303
    for page in (ben.get(f"/c/{n}").text, ben.get(NEURON).text):  # shown back to its reviewer, on both pages
        assert re.search(r'your review: <span class="tag dispute">DISPUTE</span> — not on the weights', page), page
    assert "your review:" not in amy.get(f"/c/{n}").text
    claim = amy.get(f"/c/{n}").text
    assert "1 review ·" in claim and "1 reviews" not in claim


def test_the_cite_block_is_a_live_part_with_the_current_revision(api, accounts):
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": "cite me", "kind": "FEATURE", "subjects": ["InceptionV1 4c:12"]}},
    )["data"]["createClaim"]
    number = made["key"].split(":")[1]
    cite = re.compile(r'<section class="cite" id="cite" data-live>.*?</section>', re.S)
    assert f"claim:{number}@1" in cite.search(api.get(f"/c/{number}").text)[0]
    as_user(api, accounts["editor"]["token"], UPDATE, {"key": made["key"], "r": 1, "patch": {"label": "cite me (r2)"}})
    assert f"claim:{number}@2" in cite.search(api.get(f"/c/{number}").text)[0]  # what live.js swaps in


# --- random weights, grammar ----------------------------------------------------------------------------------------


def test_random_weights_are_said_as_they_are_and_family_claims_warn(api, engine, tmp_path):
    from kb.claims.families import import_families
    from kb.db.catalog import load_catalog

    model = api.get("/n/inceptionv1").text
    assert "as trained by" not in model  # the trained weights' description, not these
    assert "seeded random weights" in model and 'id="weights-note"' in model
    name = f"fam-{secrets.token_hex(3)}"
    (tmp_path / "mixed3b.json").write_text(f'[{{"name": "{name}", "units": [379, 385,], "comment": "curves"}},]')
    with engine.begin() as conn:
        import_families(conn, load_catalog(conn), tmp_path, "inceptionv1", "doi:10.23915/distill.00024.006")
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT id FROM claim WHERE label = :l"), {"l": name}).scalar_one()
    page = api.get(f"/c/{n}").text
    assert 'id="family-random"' in page and "seeded random weights" in page
    # one unit, one claim: no "1 units"
    layer = api.get(f"/n/inceptionv1/mixed3b?family={name}").text
    assert "(2 units)" in layer and "1 units" not in layer
    one = f"solo-{secrets.token_hex(3)}"
    (tmp_path / "mixed3b.json").write_text(f'[{{"name": "{one}", "units": [7], "comment": ""}}]')
    with engine.begin() as conn:
        import_families(conn, load_catalog(conn), tmp_path, "inceptionv1", "doi:10.23915/distill.00024.007")
    search = api.get(f"/search?q={one}").text
    assert "1 unit</span>" in search and "1 units" not in search
    layer = api.get("/n/inceptionv1/mixed3b").text
    assert f"{one} (1 unit)" in layer and "1 unit</a>" in layer and "1 units" not in layer


# --- /explore -------------------------------------------------------------------------------------------------------


def test_explore_shows_the_form_again_with_the_refusal_and_keeps_its_inputs_within_the_budget(api):
    roots = "InceptionV1 4c:447"
    page = api.get(f"/explore?roots={roots}&depth=3&perNode=5").text
    most = int(re.search(r'name="perNode" type="number" min="1" max="(\d+)"', page)[1])
    top = int(re.search(r'name="depth" type="number" min="1" max="(\d+)"', page)[1])
    assert top == 4 and 1 <= most < 20  # the API's depth limit; the budget's perNode at depth 3
    over = api.get(f"/explore?roots={roots}&depth=3&perNode={most + 1}")
    assert over.status_code == 400 and '<form class="explore"' in over.text  # the form, not a bare "Bad request"
    assert (
        f'value="{most + 1}"' in over.text and "over the budget" in over.text and f"perNode up to {most}" in over.text
    )
    assert api.get(f"/explore?roots={roots}&depth=3&perNode={most}").status_code == 200  # its max is drawn
    deep = api.get(f"/explore?roots={roots}&depth=99")
    assert (
        deep.status_code == 400
        and '<form class="explore"' in deep.text
        and "depth must be 1..4 and perNode 1..20" in deep.text
    )
    unknown = api.get("/explore?roots=nosuch/x:1")
    assert (
        unknown.status_code == 404 and '<form class="explore"' in unknown.text and 'value="nosuch/x:1"' in unknown.text
    )
    typo = api.get(f"/explore?roots={roots}&depth=two")
    assert typo.status_code == 400 and "whole numbers" in typo.text and '<form class="explore"' in typo.text


# --- the activity feed ----------------------------------------------------------------------------------------------


def test_a_bulk_render_request_is_one_activity_entry(api, engine):
    sha = _sha(engine)
    params = {"size": 64, "steps": 16, "n": secrets.token_hex(4)}
    units = [jobs.Unit("inceptionv1", sha, "mixed3a", i) for i in range(6)]
    with engine.begin() as conn:
        ids, sent = jobs.request(conn, units, "FEATURE_VIS", params)
        (single,), _ = jobs.request(conn, [jobs.Unit("inceptionv1", sha, "mixed3a", 40)], "FEATURE_VIS", params)
        before = activity.last_seq(conn)
    assert sent == ids
    for job_id in ids[:3]:
        _land(engine, job_id, _artifact(engine, "FEATURE_VIS", params))
    with engine.begin() as conn:  # one ends FAILED (its last attempt)
        assert jobs.start(conn, [ids[3]], "test", 60)
        assert not jobs.fail(conn, ids[3], "out of memory", retryable=False)
    with engine.begin() as conn:
        assert jobs.start(conn, ids[4:], "test", 60)
    with engine.connect() as conn:
        assert not [r for r in activity.after(conn, before) if r["kind"] == "RENDER"]  # nothing before the end
    # the last two end at once, each in its own transaction: exactly one of them writes the request's entry
    errors: list[BaseException] = []

    def finish(job_id):
        try:
            with engine.begin() as conn:
                jobs.finish(conn, job_id, _artifact(engine, "FEATURE_VIS", params))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finish, args=(j,)) for j in ids[4:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    _land(engine, single, _artifact(engine, "FEATURE_VIS", params))
    with engine.connect() as conn:
        rows = [r for r in activity.after(conn, before) if r["kind"] == "RENDER"]
    assert [r["subject"] for r in rows] == [f"renders:{min(ids)}", f"render:{single}"], rows
    bulk = rows[0]
    assert bulk["summary"] == "rendered 5 of 6 units of mixed3a (feature_vis, size 64, steps 16); 1 did not finish"
    assert len(bulk["neurons"]) == 5 and link(bulk) == "/n/inceptionv1/mixed3a"
    # /activity: filtered by kind, the bulk entry shown once
    renders = api.get("/activity?kind=render").text
    assert "rendered 5 of 6 units of mixed3a" in renders and 'href="/n/inceptionv1/mixed3a"' in renders
    assert "/events?kind=RENDER" in renders
    claims = api.get("/activity?kind=claim").text
    assert "rendered 5 of 6 units" not in claims and f"render:{single}" not in claims
    bad = api.get("/activity?kind=nonsense")
    assert bad.status_code == 400 and "one of claim, review, circuit, render" in bad.text


def test_a_request_asked_again_after_its_entry_starts_a_new_one(engine, inceptionv1):
    """A FAILED job of an ended bulk request, asked for again alone, is one unit's entry: not the old request's."""
    sha = _sha(engine)
    params = {"size": 32, "n": secrets.token_hex(4)}
    units = [jobs.Unit("inceptionv1", sha, "mixed3b", i) for i in range(2)]
    with engine.begin() as conn:
        ids, _ = jobs.request(conn, units, "WEIGHTS", params)
        assert jobs.start(conn, ids, "test", 60)
        assert not jobs.fail(conn, ids[0], "broken", retryable=False)
        jobs.finish(conn, ids[1], _artifact(engine, "WEIGHTS", params))
    with engine.connect() as conn:  # after the commit: on PostgreSQL a row's seq is given when it commits
        before = activity.last_seq(conn)
    with engine.begin() as conn:
        again, sent = jobs.request(conn, units[:1], "WEIGHTS", params)
    assert again == sent == ids[:1]
    _land(engine, ids[0], _artifact(engine, "WEIGHTS", params))
    with engine.connect() as conn:
        rows = [r for r in activity.after(conn, before) if r["kind"] == "RENDER"]
    assert [(r["subject"], r["summary"]) for r in rows] == [(f"render:{ids[0]}", "weights of inceptionv1/mixed3b:0")]


@pytest.mark.parametrize(
    ("kinds", "row", "wanted"),
    [
        ({"RENDER"}, {"kind": "RENDER", "model_key": "m"}, True),
        ({"CLAIM"}, {"kind": "RENDER", "model_key": "m"}, False),
        (set(), {"kind": "REVIEW", "model_key": "m"}, True),
    ],
)
def test_live_streams_filter_by_kind_too(kinds, row, wanted):
    full = {"neurons": [], "claim_id": None, "circuit_id": None, **row}
    assert Filter(models=frozenset({"m"}), kinds=frozenset(kinds)).matches(full) is wanted
    assert Filter(kinds=frozenset(kinds)).matches(full) is wanted
