"""Reviews, moderation, several mutations in one request, and who a claim's citation credits."""

import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from conftest import as_user, gql
from servers import kb_serve

from kb.claims import accounts as acc
from kb.claims import claims as domain
from kb.claims import reviews
from kb.claims.accounts import Account
from kb.claims.errors import Forbidden
from kb.db.catalog import load_catalog

STATUSES = ("PROPOSED", "SUPPORTED", "DISPUTED", "RETRACTED")
REVIEW = """mutation($k: String!, $v: Verdict!) { reviewClaim(key: $k, verdict: $v) { revision claimRevision } }"""


def _user(conn, role: str, prefix: str) -> Account:
    name = f"{prefix}-{secrets.token_hex(3)}"
    return Account(acc.create_user(conn, name, role), name, role)


def _claim(conn, author: Account, status: str = "PROPOSED", moderator: Account | None = None) -> int:
    claim_id = domain.create_claim(
        conn, load_catalog(conn), author, label="a claim", kind="FEATURE", subjects=["inceptionv1/mixed4c:447"]
    )
    if status != "PROPOSED":
        domain.set_status(conn, moderator, claim_id, 1, status)
    return claim_id


# The rules as the README states them, written out as a table: (role, old status, new status) -> allowed.
def expected(role: str, old: str, new: str) -> bool:
    if role in ("moderator", "admin"):
        return True
    if role == "author":
        return (old, new) in {("PROPOSED", "RETRACTED"), ("RETRACTED", "PROPOSED")}
    return False  # viewer, another editor


@pytest.mark.parametrize("role", ["viewer", "author", "other editor", "moderator", "admin"])
def test_every_status_transition_for_every_role(engine, inceptionv1, role):
    outcomes = {}
    with engine.begin() as conn:
        author = _user(conn, "editor", "author")
        mod = _user(conn, "moderator", "mod")
        actor = {
            "viewer": lambda: _user(conn, "viewer", "viewer"),
            "author": lambda: author,
            "other editor": lambda: _user(conn, "editor", "other"),
            "moderator": lambda: _user(conn, "moderator", "mod2"),
            "admin": lambda: _user(conn, "admin", "admin"),
        }[role]()
        for old in STATUSES:
            for new in STATUSES:
                if old == new:
                    continue
                claim_id = _claim(conn, author, old, mod)
                rev = 1 if old == "PROPOSED" else 2
                try:
                    domain.set_status(conn, actor, claim_id, rev, new)
                    outcomes[(old, new)] = True
                except Forbidden:
                    outcomes[(old, new)] = False
                status = conn.execute(sa.text("SELECT status FROM claim WHERE id = :i"), {"i": claim_id}).scalar()
                assert status == (new if outcomes[(old, new)] else old)
    assert outcomes == {k: expected(role, *k) for k in outcomes}, role
    assert len(outcomes) == 12


@pytest.mark.parametrize("status", STATUSES)
def test_an_authors_content_edit_returns_a_moderated_claim_to_proposed(engine, inceptionv1, status):
    with engine.begin() as conn:
        author, mod = _user(conn, "editor", "author"), _user(conn, "moderator", "mod")
        catalog = load_catalog(conn)
        claim_id = _claim(conn, author, status, mod)
        rev = 1 if status == "PROPOSED" else 2
        rev = domain.update_claim(conn, catalog, author, claim_id, rev, {"body": "rewritten"})
        after = conn.execute(sa.text("SELECT status FROM claim WHERE id = :i"), {"i": claim_id}).scalar()
        assert after == ("PROPOSED" if status in ("SUPPORTED", "DISPUTED") else status)
        # a moderator's own content edit keeps the status they set
        other = _claim(conn, author, status, mod)
        domain.update_claim(conn, catalog, mod, other, 1 if status == "PROPOSED" else 2, {"body": "moderated"})
        assert conn.execute(sa.text("SELECT status FROM claim WHERE id = :i"), {"i": other}).scalar() == status


def test_authors_cannot_review_and_reviews_record_what_they_judged(api, accounts, engine):
    ed, ed2, mod = (accounts[k]["token"] for k in ("editor", "editor2", "moderator"))
    key = as_user(
        api,
        ed,
        """mutation { createClaim(input: {label: "judged", kind: FEATURE, subjects: ["InceptionV1 4c:5"]}) { key } }""",
    )["data"]["createClaim"]["key"]
    own = as_user(api, ed, REVIEW, {"k": key, "v": "SUPPORT"})
    assert own["data"]["reviewClaim"] is None and own["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert as_user(api, ed2, REVIEW, {"k": key, "v": "SUPPORT"})["data"]["reviewClaim"]["claimRevision"] == 1
    # a moderator who edits the content becomes an author: no review from them either
    as_user(
        api,
        mod,
        'mutation($k: String!) { updateClaim(key: $k, expectedRevision: 1, patch: {body: "more"}) { revision } }',
        {"k": key},
    )
    assert as_user(api, mod, REVIEW, {"k": key, "v": "SUPPORT"})["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    claim = gql(
        api,
        "query($k: String!) { claim(key: $k) { revision supportCount reviews { claimRevision stale } } }",
        {"k": key},
    )["data"]["claim"]
    assert claim["revision"] == 2 and claim["supportCount"] == 1
    assert claim["reviews"] == [{"claimRevision": 1, "stale": True}]
    page = api.get(f"/c/{key.split(':')[1]}").text
    assert "of revision 1: older than the current content" in page
    again = as_user(api, ed2, REVIEW, {"k": key, "v": "DISPUTE"})["data"]["reviewClaim"]
    assert again == {"revision": 2, "claimRevision": 2}
    claim = gql(
        api,
        "query($k: String!) { claim(key: $k) { supportCount disputeCount reviews { stale } } }",
        {"k": key},
    )["data"]["claim"]
    assert claim == {"supportCount": 0, "disputeCount": 1, "reviews": [{"stale": False}]}


def test_status_changes_do_not_make_reviews_stale_or_change_the_citation(api, accounts):
    ed, ed2, mod = (accounts[k]["token"] for k in ("editor", "editor2", "moderator"))
    key = as_user(
        api,
        ed,
        """mutation { createClaim(input: {label: "cited", kind: FEATURE, subjects: ["InceptionV1 4c:6"]}) { key } }""",
    )["data"]["createClaim"]["key"]
    as_user(api, ed2, REVIEW, {"k": key, "v": "SUPPORT"})
    status = "mutation($k: String!, $r: Int!) { setClaimStatus(key: $k, expectedRevision: $r, status: SUPPORTED) { revision } }"  # noqa: E501
    assert as_user(api, mod, status, {"k": key, "r": 1})["data"]["setClaimStatus"]["revision"] == 2
    q = """query($k: String!) { claim(key: $k) { reviews { stale } authors { name } author { name }
        citation { text bibtex } } }"""
    claim = gql(api, q, {"k": key})["data"]["claim"]
    editor, moderator = accounts["editor"]["name"], accounts["moderator"]["name"]
    assert claim["reviews"] == [{"stale": False}]
    assert claim["authors"] == [{"name": editor}] and claim["author"] == {"name": editor}
    assert claim["citation"]["text"].startswith(f'{editor}, "cited"') and moderator not in claim["citation"]["text"]
    assert f"author = {{{editor.replace('-', '-')}}}" in claim["citation"]["bibtex"]
    page = api.get(f"/c/{key.split(':')[1]}").text
    assert f"by {editor} ·" in page and moderator not in page.split("<h2>History")[0]
    # a moderator's content edit makes them a second author, after the first
    edit = 'mutation($k: String!) { updateClaim(key: $k, expectedRevision: 2, patch: {label: "cited v2"}) { status } }'
    assert as_user(api, mod, edit, {"k": key})["data"]["updateClaim"]["status"] == "SUPPORTED"
    claim = gql(api, q, {"k": key})["data"]["claim"]
    assert [a["name"] for a in claim["authors"]] == [editor, moderator]
    assert claim["citation"]["text"].startswith(f'{editor}, {moderator}, "cited v2"')
    assert f"author = {{{editor} and {moderator}}}" in claim["citation"]["bibtex"]


def test_several_mutations_commit_each_and_answer_partial_data(api, accounts, engine):
    ed, ed2 = accounts["editor"]["token"], accounts["editor2"]["token"]
    keys = [
        as_user(
            api,
            ed,
            f'mutation {{ createClaim(input: {{label: "m{i}", kind: FEATURE, subjects: ["InceptionV1 4c:7"]}}) {{ key }} }}',  # noqa: E501
        )["data"]["createClaim"]["key"]
        for i in range(2)
    ]
    q = f"""mutation {{ a: reviewClaim(key: "{keys[0]}", verdict: SUPPORT) {{ revision }}
        b: reviewClaim(key: "{keys[1]}", verdict: SUPPORT) {{ revision }}
        c: reviewClaim(key: "claim:999999", verdict: SUPPORT) {{ revision }} }}"""
    body = as_user(api, ed2, q)
    assert body["data"] == {"a": {"revision": 1}, "b": {"revision": 1}, "c": None}, body
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [(["c"], "NOT_FOUND")]
    with engine.connect() as conn:
        ids = [int(k.split(":")[1]) for k in keys]
        counts = conn.execute(
            sa.text("SELECT support_count FROM claim WHERE id IN (:a, :b)"), {"a": ids[0], "b": ids[1]}
        ).scalars()
        assert list(counts) == [1, 1]


def test_rate_limited_mutation_in_a_batch_is_the_only_null(engine, accounts, inceptionv1):
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    with engine.begin() as conn:
        author = _user(conn, "editor", "batch")
        ids = [_claim(conn, author) for _ in range(3)]
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False), rate_limit_per_minute=1, rate_limit_burst=2
    )
    q = (
        "mutation { "
        + " ".join(f'r{i}: reviewClaim(key: "claim:{c}", verdict: SUPPORT) {{ revision }}' for i, c in enumerate(ids))
        + " }"
    )
    with TestClient(create_app(settings, engine=engine, warm=False)) as client:
        body = as_user(client, accounts["editor2"]["token"], q)
    assert body["data"] == {"r0": {"revision": 1}, "r1": {"revision": 1}, "r2": None}, body
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [(["r2"], "RATE_LIMITED")]
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT claim_id FROM review WHERE claim_id IN ({','.join(map(str, ids))})"))
        assert sorted(r[0] for r in rows) == ids[:2]


REVIEWERS, ROUNDS = 16, 8


def test_concurrent_reviews_keep_exact_counts(engine, db_url, inceptionv1):
    """16 reviewers x 8 rounds, each reviewer sending two reviews of the round's claim at once (32 requests in
    flight) against `kb serve --workers 4` (PostgreSQL or SQLite): no error, counts equal to the review rows, gapless
    histories."""
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        owner = _user(conn, "editor", "owner")
        claims = [_claim(conn, owner) for _ in range(ROUNDS)]
        tokens = []
        for i in range(REVIEWERS):
            acc.create_user(conn, f"rev{i}-{suffix}", "editor")
            tokens.append(acc.create_token(conn, f"rev{i}-{suffix}"))
    codes: Counter = Counter()
    with kb_serve(
        {"KB_DATABASE_URL": db_url, "KB_RATE_LIMIT_BURST": "100000", "KB_QUERY_RATE_LIMIT": ""},
        "--workers",
        "4",
        "--no-render-worker",
    ) as base:
        clients = [httpx.Client(base_url=base, timeout=60, headers={"authorization": f"Bearer {t}"}) for t in tokens]

        def send(job):
            i, claim_id, verdict = job
            body = (
                clients[i]
                .post("/graphql", json={"query": REVIEW, "variables": {"k": f"claim:{claim_id}", "v": verdict}})
                .json()
            )
            return body["errors"][0]["extensions"]["code"] if body.get("errors") else None

        try:
            with ThreadPoolExecutor(2 * REVIEWERS) as pool:
                for r, claim_id in enumerate(claims):
                    # even rounds: every reviewer supports twice; odd: supports and disputes at once
                    jobs = [(i, claim_id, "SUPPORT") for i in range(REVIEWERS)]
                    jobs += [(i, claim_id, "SUPPORT" if r % 2 == 0 else "DISPUTE") for i in range(REVIEWERS)]
                    codes.update(pool.map(send, jobs))
        finally:
            for c in clients:
                c.close()
    assert codes == {None: 2 * REVIEWERS * ROUNDS}, codes
    with engine.connect() as conn:
        for r, claim_id in enumerate(claims):
            support, dispute = conn.execute(
                sa.text("SELECT support_count, dispute_count FROM claim WHERE id = :i"), {"i": claim_id}
            ).one()
            rows = Counter(
                conn.execute(sa.text("SELECT verdict FROM review WHERE claim_id = :i"), {"i": claim_id}).scalars()
            )
            assert (support, dispute) == (rows["SUPPORT"], rows["DISPUTE"])
            assert support + dispute == REVIEWERS
            if r % 2 == 0:
                assert support == REVIEWERS
            history = conn.execute(
                sa.text("SELECT user_id, revision FROM review_revision WHERE claim_id = :i ORDER BY user_id, revision"),
                {"i": claim_id},
            ).all()
            assert len(history) == 2 * REVIEWERS
            assert all(h.revision == 1 + n % 2 for n, h in enumerate(history))
    print(f"\n{REVIEWERS} reviewers x {ROUNDS} rounds x 2 at once: {codes[None]} OK, 0 errors, counts exact")


def test_review_lock_helpers(engine, inceptionv1):
    with engine.begin() as conn:
        a, b = _user(conn, "editor", "a"), _user(conn, "moderator", "b")
        claim_id = _claim(conn, a)
        domain.set_status(conn, b, claim_id, 1, "SUPPORTED")
        domain.update_claim(conn, load_catalog(conn), b, claim_id, 2, {"label": "b's"})
        revs = domain.revisions(conn, [claim_id])[claim_id]
        assert reviews.content_authors(revs) == [a.id, b.id]
        assert reviews.last_content_revision(revs) == 3 and reviews.lock_claim(conn, claim_id) == 3
