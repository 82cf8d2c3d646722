"""Account administration's use cases (kb.app.accounts), which the CLI and the account page both call: each is
one unit of work, and what it returns is typed."""

import secrets

import pytest

from kb.app import accounts, sign_in
from kb.claims import sessions
from kb.claims.errors import BadInput, NotFound, RateLimited, Unauthenticated


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


def test_signing_in_replaces_the_browsers_old_session_and_a_failure_counts_though_it_raises(engine):
    name = f"signin-case-{secrets.token_hex(3)}"
    accounts.create_user(engine, name, "editor")
    accounts.set_password(engine, name, "a long enough passphrase 42")
    limits = sessions.Limits(per_account=1, per_address=100, window_s=60, first_wait_s=30)

    first = sign_in.sign_in(engine, limits, 3600, name, "a long enough passphrase 42", "10.9.8.7")
    first_info = sign_in.session_of(engine, first)
    assert first_info is not None and first_info.account.name == name
    second = sign_in.sign_in(engine, limits, 3600, name, "a long enough passphrase 42", "10.9.8.7", "", first)
    assert sign_in.session_of(engine, first) is None  # the old secret ended in the same commit
    second_info = sign_in.session_of(engine, second)
    assert second_info is not None
    sign_in.sign_out(engine, second_info.id)
    assert sign_in.session_of(engine, second) is None

    with pytest.raises(Unauthenticated):
        sign_in.sign_in(engine, limits, 3600, name, "wrong", "10.9.8.7")
    with pytest.raises(RateLimited):  # the failure was committed though sign_in raised: the limit (1) is reached
        sign_in.sign_in(engine, limits, 3600, name, "a long enough passphrase 42", "10.9.8.7")


def test_an_account_revokes_only_its_own_tokens(engine):
    ada, bob = (f"own-{who}-{secrets.token_hex(3)}" for who in ("ada", "bob"))
    ada_id, bob_id = accounts.create_user(engine, ada, "editor"), accounts.create_user(engine, bob, "editor")
    accounts.create_token(engine, ada, "laptop")
    (token,) = sign_in.own_tokens(engine, ada_id)
    assert (token.note, token.revoked_at) == ("laptop", None)
    with pytest.raises(NotFound):
        sign_in.revoke_own_token(engine, bob_id, token.id)  # bob cannot revoke ada's token, nor learn it exists
    sign_in.revoke_own_token(engine, ada_id, token.id)
    assert sign_in.own_tokens(engine, ada_id)[0].revoked_at is not None
    with pytest.raises(NotFound):
        sign_in.revoke_own_token(engine, ada_id, token.id)  # already revoked
