"""A failure of the compiled executor must not turn into an outage: kb.schema.compiled reads graphql-core's schema,
kb.schema's classes and the resolvers kb.schema.fields registers, and when compiling or running a plan fails it
leaves the query to strawberry, logs once per document (or plan), and counts the fallbacks, which /health shows."""

from __future__ import annotations

import logging
import secrets

from conftest import gql

from kb.schema import compiled

INPUTS = "inputs(first: $n) { totalCount }"


def _broken(*args, **kwargs):
    raise AttributeError("'function' object has no attribute '__qualname__'")  # a bug in the compiler's reading


def compiled_counts(client) -> dict:
    health = client.get("/health")
    assert health.status_code == 200, health.text
    return health.json()["compiled"]


def failures_logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kb.api" and "strawberry answers it" in r.getMessage()]


def test_a_broken_compiler_falls_back_once_per_document(api, monkeypatch, caplog):
    query = f"query Broken{secrets.token_hex(3)}($k: String!) {{ neuron(key: $k) {{ key index layer {{ key }} }} }}"
    expected = gql(api, query, {"k": "InceptionV1 4c:447"})  # strawberry's answer (the plan is made for the next)
    api.app.state.graphql.plans.clear()  # the document is new again
    monkeypatch.setattr(compiled, "registered", _broken)  # the compiler's first read of the resolver registry
    before = compiled_counts(api)
    caplog.set_level(logging.WARNING, logger="kb.api")
    for _ in range(5):
        assert gql(api, query, {"k": "InceptionV1 4c:447"}) == expected
    after = compiled_counts(api)
    assert after["fallbacks"] == before["fallbacks"] + 5
    assert after["failed_documents"] == before["failed_documents"] + 1
    assert after["answered"] == before["answered"]
    logged = failures_logged(caplog)
    assert len(logged) == 1 and "compiling a query failed" in logged[0].getMessage()
    assert logged[0].exc_info and logged[0].exc_info[0] is AttributeError


def test_a_plan_broken_at_run_time_falls_back_and_is_logged_once(api, monkeypatch, caplog):
    query = f"query Run{secrets.token_hex(3)}($k: String!, $n: Int) {{ neuron(key: $k) {{ key {INPUTS} }} }}"
    variables = {"k": "InceptionV1 3a:7", "n": 2}
    api.app.state.graphql.plans.clear()
    expected = gql(api, query, variables)  # strawberry, and the plan is compiled
    assert gql(api, query, variables) == expected  # the plan
    before = compiled_counts(api)

    def converted(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'value'")

    monkeypatch.setattr(compiled, "convert_arguments", converted)  # variables' arguments convert at run time
    caplog.set_level(logging.WARNING, logger="kb.api")
    for _ in range(4):
        assert gql(api, query, variables) == expected
    after = compiled_counts(api)
    assert after["fallbacks"] == before["fallbacks"] + 4
    assert after["answered"] == before["answered"]
    logged = failures_logged(caplog)
    assert len(logged) == 1 and "compiled plan of a query failed" in logged[0].getMessage()
