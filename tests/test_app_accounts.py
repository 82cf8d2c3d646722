"""Account administration's use cases (kb.app.accounts), which the CLI and the account page both call: each is
one unit of work, and what it returns is typed."""

import secrets

import pytest

from kb.app import accounts
from kb.claims.errors import BadInput, NotFound


def test_an_account_and_its_tokens_from_creation_to_revocation(engine):
    name = f"admin-case-{secrets.token_hex(3)}"
    accounts.create_user(engine, name, "editor", "Ada")
    assert accounts.UserSummary(name, "editor", "Ada") in accounts.users(engine)
    with pytest.raises(BadInput):
        accounts.create_user(engine, name, "editor")  # a taken name: nothing written

    token = accounts.create_token(engine, name, "notebook")
    listed = accounts.tokens(engine, name)
    assert [(t.prefix, t.user, t.note, t.active) for t in listed] == [(token[:12], name, "notebook", True)]
    accounts.revoke_token(engine, token)
    assert [t.active for t in accounts.tokens(engine, name)] == [False]
    with pytest.raises(NotFound):
        accounts.revoke_token(engine, token)  # already revoked: no active token with that prefix

    accounts.set_password(engine, name, "a long enough passphrase 42")
    assert accounts.sign_out_everywhere(engine, name) == 0  # no sessions open
    with pytest.raises(NotFound, match="no user 'nobody-at-all'"):
        accounts.tokens(engine, "nobody-at-all")
