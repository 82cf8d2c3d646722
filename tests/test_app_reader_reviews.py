"""kb.app.reader_reviews on a real database: a reader's standing towards claims (authored, their own review, stale
once the claim's content changed after it)."""

from conftest import as_user

from kb.app.reader_reviews import OwnReview, Standing, standing
from kb.claims.accounts import user_id

CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key } }"""
REVIEW = (
    """mutation($key: String!, $v: Verdict!) { reviewClaim(key: $key, verdict: $v, comment: "seen") { verdict } }"""
)
UPDATE = """mutation($key: String!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: 1, patch: $patch, message: "sharper") { revision } }"""


def test_a_readers_standing_towards_each_claim(api, accounts, engine):
    editor, other = accounts["editor"], accounts["editor2"]
    made = [
        as_user(api, editor["token"], CREATE, {"input": {"label": label, "kind": "FEATURE", "subjects": [s]}})
        for label, s in (("wheels", "InceptionV1 4c:447"), ("windows", "InceptionV1 4c:448"))
    ]
    first, second = (m["data"]["createClaim"]["key"] for m in made)
    assert "errors" not in as_user(api, other["token"], REVIEW, {"key": first, "v": "DISPUTE"})
    with engine.connect() as conn:
        author, reviewer = user_id(conn, editor["name"]), user_id(conn, other["name"])

    assert standing(engine, author, [first, second]) == {
        first: Standing(authored=True, review=None),
        second: Standing(authored=True, review=None),
    }
    mine = standing(engine, reviewer, [second, first])
    assert list(mine) == [second, first]
    assert mine[first] == Standing(authored=False, review=OwnReview("DISPUTE", "seen", stale=False))
    assert mine[second] == Standing(authored=False, review=None)

    assert "errors" not in as_user(api, editor["token"], UPDATE, {"key": first, "patch": {"body": "and doors"}})
    assert standing(engine, reviewer, [first])[first].review == OwnReview("DISPUTE", "seen", stale=True)
    assert standing(engine, reviewer, []) == {}
