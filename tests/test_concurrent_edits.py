"""50 concurrent editors x 20 edits on 5 claims, over HTTP, against a multi-process server: no lost revision.
On PostgreSQL and SQLite (four processes on one SQLite file: WAL, each write waiting for the one write lock).

Every edit names the revision it read. Of concurrent edits of one revision exactly one may commit; the others
must get EDIT_CONFLICT. Afterwards each claim's history is 1..N without gaps, N - 1 equals the accepted edits,
and every accepted edit is in exactly one revision.
"""

import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa
from servers import kb_serve

from kb.claims import accounts as acc
from kb.claims.accounts import Account
from kb.claims.claims import create_claim
from kb.db.catalog import load_catalog

EDITORS, EDITS, CLAIMS = 50, 20, 5
READ = "query($k: String!) { claim(key: $k) { revision } }"
UPDATE = """mutation($k: String!, $r: Int!, $l: String!) {
    updateClaim(key: $k, expectedRevision: $r, patch: {label: $l}) { revision } }"""


def test_no_lost_revisions(engine, db_url, inceptionv1):
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        owner = acc.create_user(conn, f"owner-{suffix}", "moderator")
        catalog = load_catalog(conn)
        keys = [
            f"claim:{create_claim(conn, catalog, Account(owner, 'owner', 'moderator'), label=f'claim {i}', kind='FEATURE', subjects=[f'inceptionv1/mixed4c:{i}'])}"  # noqa: E501
            for i in range(CLAIMS)
        ]
        tokens = []
        for i in range(EDITORS):
            acc.create_user(conn, f"ed{i}-{suffix}", "moderator")  # may edit any claim's content
            tokens.append(acc.create_token(conn, f"ed{i}-{suffix}"))

    with kb_serve(
        {"KB_DATABASE_URL": db_url, "KB_RATE_LIMIT_BURST": "100000", "KB_QUERY_RATE_LIMIT": ""},
        "--workers",
        "4",
        "--no-render-worker",
    ) as base:

        def editor(i: int) -> list[tuple[str, str, str | None]]:
            out = []
            with httpx.Client(base_url=base, timeout=60, headers={"authorization": f"Bearer {tokens[i]}"}) as client:
                for j in range(EDITS):
                    key = keys[(i + j) % CLAIMS]
                    rev = client.post("/graphql", json={"query": READ, "variables": {"k": key}}).json()["data"][
                        "claim"
                    ]["revision"]
                    label = f"edit {i}.{j}"
                    body = client.post(
                        "/graphql", json={"query": UPDATE, "variables": {"k": key, "r": rev, "l": label}}
                    ).json()
                    code = body["errors"][0]["extensions"]["code"] if body.get("errors") else None
                    out.append((key, label, code))
            return out

        with ThreadPoolExecutor(EDITORS) as pool:
            results = [r for rs in pool.map(editor, range(EDITORS)) for r in rs]

    assert len(results) == EDITORS * EDITS
    codes = Counter(code for _, _, code in results)
    assert set(codes) <= {None, "EDIT_CONFLICT"}, codes
    accepted = {key: {label for k, label, code in results if k == key and code is None} for key in keys}
    with engine.connect() as conn:
        for key in keys:
            claim_id = int(key.split(":")[1])
            revs = conn.execute(
                sa.text("SELECT revision, label FROM claim_revision WHERE claim_id = :c ORDER BY revision"),
                {"c": claim_id},
            ).all()
            assert [r.revision for r in revs] == list(range(1, len(revs) + 1))  # linear, no gaps
            assert len(revs) - 1 == len(accepted[key])  # no lost revision
            assert sorted(r.label for r in revs[1:]) == sorted(accepted[key])  # each accepted edit exactly once
            current = conn.execute(sa.text("SELECT revision, label FROM claim WHERE id = :c"), {"c": claim_id}).one()
            assert current.revision == len(revs) and current.label == revs[-1].label
    assert codes[None] >= CLAIMS and codes["EDIT_CONFLICT"] > 0  # real contention happened
    print(
        f"\n{EDITORS} editors x {EDITS} edits on {CLAIMS} claims: {codes[None]} accepted, "
        f"{codes['EDIT_CONFLICT']} EDIT_CONFLICT, 0 lost"
    )
