"""Annotation forms at the HTTP level (kb.web.annotate): propose a claim on a neuron page, support or dispute it,
edit it (EDIT_CONFLICT shows both versions and keeps yours), moderators' status changes and queue, render requests.
Every post needs the same origin and the session's CSRF token; a refused one re-shows the form with the text."""

import html
import itertools
import re
import secrets

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
ORIGIN = {"origin": "http://testserver"}
NEURON = "/n/inceptionv1/mixed4c/11"
_addresses = itertools.count(10)
_NET = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(Settings(database_url=url, public_url="http://testserver"), engine=engine, warm=False)
    application.state.graphs.warm()
    return application


@pytest.fixture(scope="module")
def people(engine):
    suffix = secrets.token_hex(3)
    out = {}
    with engine.begin() as conn:
        for who, role in (("amy", "editor"), ("ben", "editor"), ("mod", "moderator"), ("vic", "viewer")):
            name = f"{who}-{suffix}"
            acc.create_user(conn, name, role)
            sessions.set_password(conn, name, PASSWORD)
            out[who] = name
    return out


def signed_in(app, name: str) -> TestClient:
    client = TestClient(app, client=(f"{_NET}.{next(_addresses)}", 40000), follow_redirects=False)
    page = client.get("/signin")
    token = re.search(r'action="/signin"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text)[1]
    done = client.post(
        "/signin", data={"csrf": token, "next": "/account", "name": name, "password": PASSWORD}, headers=ORIGIN
    )
    assert done.status_code == 303, done.text
    return client


def csrf(client: TestClient) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").text)[1]


def propose(client, fields: dict, headers=ORIGIN, path=NEURON):
    data = {"csrf": csrf(client), "kind": "FEATURE", "body": "", "confidence": "", "doi": "", "url": "", **fields}
    return client.post(path, data=data, headers=headers)


def claim_row(engine, label: str) -> sa.Row | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT id, revision, status, support_count, dispute_count, body FROM claim WHERE label = :l"),
            {"l": label},
        ).first()


def test_propose_from_the_neuron_page(app, people, engine):
    amy = signed_in(app, people["amy"])
    page = amy.get(NEURON)
    for label in ("Label", "Kind", "Body", "Confidence", "DOI", "URL"):
        assert f">{label}</label>" in page.text, label
    assert "Propose claim</button>" in page.text and 'name="csrf"' in page.text

    label = f"curvy {secrets.token_hex(3)}"
    made = propose(
        amy,
        {"label": label, "body": "looks **curvy**", "confidence": "0.6", "doi": "10.23915/distill.00024"},
    )
    assert made.status_code == 303 and made.headers["location"].startswith(NEURON + "#claim-")
    row = claim_row(engine, label)
    assert row is not None and row.revision == 1 and row.status == "PROPOSED"
    assert made.headers["location"] == f"{NEURON}#claim-{row.id}"
    shown = amy.get(NEURON)
    assert label in shown.text and f'id="claim-{row.id}"' in shown.text
    claim = amy.get(f"/c/{row.id}").text
    assert "doi:10.23915/distill.00024" in claim and "<strong>curvy</strong>" in claim
    long = f"long {secrets.token_hex(3)}"  # a body near the domain's limit, URL-encoded well past 64 KiB
    assert propose(amy, {"label": long, "body": "\N{LATIN SMALL LETTER E WITH ACUTE}" * 90_000}).status_code == 303
    assert len(claim_row(engine, long).body) == 90_000
    with engine.connect() as conn:  # the activity row the API's mutation writes
        kinds = conn.execute(sa.text("SELECT kind FROM activity WHERE claim_id = :c"), {"c": row.id}).scalars().all()
    assert kinds == ["CLAIM"]


def test_bad_input_reshows_the_form_with_the_text(app, people, engine):
    amy = signed_in(app, people["amy"])
    body = "a long explanation\nthat must not be lost <b>"
    for fields, message in (
        ({"label": "   ", "body": body}, "label must not be empty"),
        ({"label": "too sure", "body": body, "confidence": "1.5"}, "confidence must be between 0 and 1"),
        ({"label": "not a number", "body": body, "confidence": "very"}, "Confidence is a number"),
        ({"label": "odd kind", "body": body, "kind": "NOPE"}, "Kind must be one of"),
        ({"label": "bad doi", "body": body, "doi": "not-a-doi"}, "doi must look like"),
    ):
        answer = propose(amy, fields)
        assert answer.status_code == 400, (fields, answer.status_code)
        text = html.unescape(answer.text)
        assert message in text, (message, text[:300])
        assert body in text  # the Body textarea keeps what was typed
        if fields["label"].strip():
            assert f'value="{fields["label"]}"' in answer.text
        assert claim_row(engine, fields["label"]) is None
    kept = propose(amy, {"label": "x", "confidence": "2", "doi": "10.1/abc", "url": "https://example.org/a"})
    assert 'value="10.1/abc"' in kept.text and 'value="https://example.org/a"' in kept.text and 'value="2"' in kept.text


def test_posts_need_same_origin_csrf_and_a_session(app, people, engine):
    amy = signed_in(app, people["amy"])
    label = f"forged {secrets.token_hex(3)}"
    assert propose(amy, {"label": label}, headers={"origin": "https://evil.example"}).status_code == 403
    assert propose(amy, {"label": label}, headers={}).status_code == 403  # neither Origin nor Referer
    no_token = amy.post(NEURON, data={"label": label, "kind": "FEATURE"}, headers=ORIGIN)
    assert no_token.status_code == 403
    wrong = amy.post(NEURON, data={"csrf": "guess", "label": label, "kind": "FEATURE"}, headers=ORIGIN)
    assert wrong.status_code == 403
    nobody = TestClient(app, follow_redirects=False)
    out = nobody.post(NEURON, data={"csrf": "x", "label": label, "kind": "FEATURE"}, headers=ORIGIN)
    assert out.status_code == 401 and "Sign in" in out.text
    assert (
        'href="/signin?next=' in nobody.get(NEURON).text and "Sign in to propose or review" in nobody.get(NEURON).text
    )
    assert "Propose claim</button>" not in nobody.get(NEURON).text
    assert nobody.get("/c/1/edit").status_code == 303  # to the sign-in page
    for path in ("/c/1/review", "/c/1/edit", "/c/1/status", NEURON + "/render"):
        assert amy.post(path, data={"csrf": csrf(amy)}, headers={"origin": "http://evil.example"}).status_code == 403
        assert nobody.post(path, data={"csrf": "x"}, headers=ORIGIN).status_code == 401
    assert claim_row(engine, label) is None


def test_viewers_cannot_propose(app, people, engine):
    vic = signed_in(app, people["vic"])
    page = vic.get(NEURON).text
    assert "Propose claim</button>" not in page and "needs the editor role" in page
    label = f"viewer {secrets.token_hex(3)}"
    refused = propose(vic, {"label": label, "body": "kept body"})
    assert refused.status_code == 403 and "needs the editor role" in refused.text
    assert claim_row(engine, label) is None


def test_support_and_dispute(app, people, engine):
    amy, ben, mod = (signed_in(app, people[w]) for w in ("amy", "ben", "mod"))
    label = f"reviewed {secrets.token_hex(3)}"
    assert propose(amy, {"label": label}).status_code == 303
    n = claim_row(engine, label).id
    back = ben.post(
        f"/c/{n}/review",
        data={"csrf": csrf(ben), "verdict": "SUPPORT", "comment": "checked it", "next": NEURON},
        headers=ORIGIN,
    )
    assert back.status_code == 303 and back.headers["location"] == f"{NEURON}#claim-{n}"
    dispute = mod.post(f"/c/{n}/review", data={"csrf": csrf(mod), "verdict": "DISPUTE", "comment": ""}, headers=ORIGIN)
    assert dispute.status_code == 303 and dispute.headers["location"] == f"/c/{n}#claim-{n}"
    row = claim_row(engine, label)
    assert (row.support_count, row.dispute_count) == (1, 1)
    assert "+1 / \N{MINUS SIGN}1" in ben.get(NEURON).text and "checked it" in ben.get(f"/c/{n}").text
    # its author may not review it: the page again, the comment kept, the reason shown
    own = amy.post(
        f"/c/{n}/review",
        data={"csrf": csrf(amy), "verdict": "SUPPORT", "comment": "my own words", "next": NEURON},
        headers=ORIGIN,
    )
    assert own.status_code == 403 and "cannot review it" in own.text and 'value="my own words"' in own.text
    bad = ben.post(f"/c/{n}/review", data={"csrf": csrf(ben), "verdict": "MEH", "comment": "c"}, headers=ORIGIN)
    assert bad.status_code == 400 and "Support or Dispute" in bad.text
    assert (claim_row(engine, label).support_count, claim_row(engine, label).dispute_count) == (1, 1)


def _edit(client, n: int, expected: int, **fields):
    data = {"csrf": csrf(client), "expectedRevision": str(expected), "kind": "FEATURE", "confidence": "", **fields}
    return client.post(f"/c/{n}/edit", data=data, headers=ORIGIN)


def test_edit_and_conflict_keep_your_text(app, people, engine):
    amy, mod, ben = (signed_in(app, people[w]) for w in ("amy", "mod", "ben"))
    label = f"edited {secrets.token_hex(3)}"
    assert propose(amy, {"label": label, "body": "first body"}).status_code == 303
    n = claim_row(engine, label).id
    claim_page = amy.get(f"/c/{n}").text
    assert "Edit</button>" in claim_page and "Retract</button>" in claim_page  # the author may retract
    assert "Mark supported" not in claim_page  # only moderators
    assert "Edit</button>" not in ben.get(f"/c/{n}").text  # neither author nor moderator
    form = amy.get(f"/c/{n}/edit")
    assert form.status_code == 200 and 'name="expectedRevision" value="1"' in form.text and "first body" in form.text
    assert ben.get(f"/c/{n}/edit").status_code == 403
    # the moderator saves first
    assert _edit(mod, n, 1, label=label, body="their body", message="theirs").status_code == 303
    # amy saves against revision 1: the conflict view, their version beside hers, hers still in the form
    mine = "my careful body\nwith two lines"
    conflict = _edit(amy, n, 1, label=label + " (mine)", body=mine, message="mine")
    assert conflict.status_code == 409
    text = html.unescape(conflict.text)
    assert "Their version" in text and "their body" in text and mine in text and label + " (mine)" in text
    assert 'name="expectedRevision" value="2"' in conflict.text and 'value="mine"' in conflict.text
    assert claim_row(engine, label + " (mine)") is None and claim_row(engine, label).body == "their body"
    # saved again against the revision she has now seen
    assert _edit(amy, n, 2, label=label, body=mine + "\nand theirs", message="merged").status_code == 303
    row = claim_row(engine, label)
    assert row.revision == 3 and row.body == mine + "\nand theirs"
    # bad input on the edit form: re-shown with the text
    bad = _edit(amy, n, 3, label=label, body="keep me", confidence="x")
    assert bad.status_code == 400 and "keep me" in bad.text and "Confidence is a number" in bad.text
    # an editor who is not the author is refused by the domain's rule, whatever the form says
    assert _edit(ben, n, 3, label="taken over", body="").status_code == 403
    assert claim_row(engine, label).revision == 3


def test_moderation_status_and_queue(app, people, engine):
    amy, ben, mod = (signed_in(app, people[w]) for w in ("amy", "ben", "mod"))
    label = f"moderated {secrets.token_hex(3)}"
    assert propose(amy, {"label": label}).status_code == 303
    n = claim_row(engine, label).id
    page = mod.get(f"/c/{n}").text
    assert "Mark supported</button>" in page and "Mark disputed</button>" in page
    assert 'href="/moderation"' in page and 'href="/moderation"' not in amy.get(f"/c/{n}").text
    queue = mod.get("/moderation")
    assert queue.status_code == 200 and label in queue.text and f'href="/c/{n}"' in queue.text
    assert ben.get("/moderation").status_code == 403
    assert TestClient(app, follow_redirects=False).get("/moderation").status_code == 303

    def status(client, value: str, expected: int):
        return client.post(
            f"/c/{n}/status",
            data={"csrf": csrf(client), "status": value, "expectedRevision": str(expected)},
            headers=ORIGIN,
        )

    refused = status(ben, "SUPPORTED", 1)  # an editor, not even the author
    assert refused.status_code == 403 and "only a moderator" in refused.text
    assert status(amy, "SUPPORTED", 1).status_code == 403  # the author may not judge her own claim
    assert claim_row(engine, label).status == "PROPOSED"
    assert status(mod, "DISPUTED", 1).status_code == 303
    assert claim_row(engine, label).status == "DISPUTED"
    stale = status(mod, "SUPPORTED", 1)
    assert stale.status_code == 409 and "choose again" in stale.text
    assert status(mod, "SUPPORTED", 2).status_code == 303
    assert claim_row(engine, label).status == "SUPPORTED"
    assert label not in mod.get("/moderation").text  # judged: out of the queue


def test_render_request_from_the_page(app, people, engine):
    amy, vic = signed_in(app, people["amy"]), signed_in(app, people["vic"])
    assert "Render</button>" in amy.get(NEURON).text and "Render</button>" not in vic.get(NEURON).text
    asked = amy.post(NEURON + "/render", data={"csrf": csrf(amy)}, headers={**ORIGIN, "accept": "application/json"})
    assert asked.status_code == 200, asked.text
    jobs = asked.json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] in ("QUEUED", "RUNNING", "DONE")
    with engine.connect() as conn:
        unit = conn.execute(sa.text("SELECT layer_key, unit, kind FROM render_job WHERE id = :i"), {"i": jobs[0]["id"]})
        assert tuple(unit.one()) == ("mixed4c", 11, "FEATURE_VIS")
    viewer = vic.post(NEURON + "/render", data={"csrf": csrf(vic)}, headers={**ORIGIN, "accept": "application/json"})
    assert viewer.status_code == 403 and "editor" in viewer.json()["error"]
    plain = amy.post(NEURON + "/render", data={"csrf": csrf(amy)}, headers=ORIGIN)  # without script: back to the page
    assert plain.status_code == 303 and plain.headers["location"] == NEURON + "#renders"
