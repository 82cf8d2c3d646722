"""Hostile text (issue 23, items 1 and 2): no claim body or circuit description an editor can write makes the
server's work on it unbounded, and none of that work runs on the event loop.

No test here times anything: each counts the work (what every regular expression of the Markdown pre-pass is
given, the Python steps of a render, the diff matcher's counted steps), checks a second view renders nothing
again, and names the thread the work ran on.
"""

import re
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from conftest import as_user, gql

from kb.claims import circuits as circuit_domain
from kb.claims import textdiff
from kb.claims.circuits import MAX_DESCRIPTION
from kb.claims.claims import diff as claim_diff
from kb.claims.content import MAX_BODY
from kb.claims.rows import ClaimRevisionRow
from kb.schema import deadline
from kb.schema.errors import RequestTimeout
from kb.web import markdown

CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key revision } }"""
UPDATE = """mutation($key: String!, $rev: Int!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: $rev, patch: $patch) { revision } }"""
CREATE_CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key revision } }"
UPDATE_CIRCUIT = """mutation($k: String!, $r: Int!, $p: CircuitPatch!) {
    updateCircuit(key: $k, expectedRevision: $r, patch: $p, message: "") { revision } }"""

# The issue's inputs: a tag repeated (each one opens a scan to the end of the text in the old pre-pass)...
HOSTILE_MARKUP = {
    "a": '<a href="x">',
    "code": "<code>",
    "a+code": "<a href='x'><code>",
    "lt": "<",
    "a-open": "<a ",
    "a-closed": '<a href="http://x">y</a>',
}
# ... and lines written for difflib: a hundred distinct short lines, in another order in each version (each
# doubling of the lines made the old diff about eight times slower: hours at the body limit).


def hostile_pair(chars: int) -> tuple[str, str]:
    n, k = chars // 3, 100
    before = "".join(f"{i % k:02d}\n" for i in range(n))
    after = "".join(f"{(k - 1 - i) % k:02d}\n" for i in range(n))
    return before[:chars], after[:chars]


def at(unit: str, chars: int) -> str:
    return unit * (chars // len(unit))


class Spans:
    """Every compiled pattern of kb.web.markdown, wrapped: each call records how many characters it may examine,
    and one given more than ``limit`` is refused before it runs (the old pre-pass would run for hours)."""

    def __init__(self, monkeypatch, limit: int):
        self.calls, self.limit = [], limit
        for name, value in list(vars(markdown).items()):
            if isinstance(value, re.Pattern):
                monkeypatch.setattr(markdown, name, _Counted(value, self))

    def record(self, pattern, string, pos, endpos) -> None:
        span = min(len(string), endpos) - pos
        self.calls.append(span)
        assert span <= self.limit, f"{pattern.pattern!r} was given {span} characters to scan"


class _Counted:
    def __init__(self, pattern: re.Pattern, spans: Spans):
        self.pattern, self.spans = pattern, spans

    def __getattr__(self, method):
        real = getattr(self.pattern, method)
        if method in ("match", "fullmatch", "search", "finditer", "findall"):

            def counted(string, pos=0, endpos=sys.maxsize):
                self.spans.record(self.pattern, string, pos, endpos)
                return real(string, pos, endpos)

            return counted
        if method in ("sub", "subn", "split"):

            def whole(repl_or_string, string=None, *args, **kwargs):
                text = string if isinstance(string, str) else repl_or_string
                self.spans.record(self.pattern, text, 0, sys.maxsize)
                return real(repl_or_string, string, *args, **kwargs)

            return whole
        return real


@pytest.mark.parametrize("kind", sorted(HOSTILE_MARKUP))
def test_the_markdown_pre_pass_runs_each_expression_over_one_tag_at_most(monkeypatch, kind):
    """At the body limit, each regular expression of the pre-pass sees one tag (at most 1,000 characters), and all
    of them together a few times the body (a pass or two, one or two expressions a tag): linear. (The old
    ``<a …>(.*?)</a>`` ran over the whole body from every ``<a``: roughly cubic, 311 s for 24 KB.)"""
    spans = Spans(monkeypatch, limit=1_000)
    body = at(HOSTILE_MARKUP[kind], MAX_BODY)
    markdown.from_distill(body, "inceptionv1")
    assert sum(spans.calls) <= 4 * len(body)


def test_the_pre_pass_still_converts_the_families_html():
    body = (
        "Like the <a href='#group_mixed3a_curves'>curves [x]</a>, <a href=\"https://e.org/a\">e</a>, "
        "<a name=x>no link</a>, see <code>3b:0</code>.<br>x < y <b>bold</b> <a href='x'>unclosed <code>c</code>"
    )
    assert markdown.from_distill(body, "inceptionv1") == (
        "Like the [curves \\[x\\]](/n/inceptionv1/mixed3a?family=curves), [e](https://e.org/a), "
        "no link, see `3b:0`.  \nx < y bold unclosed `c`"
    )


def python_steps(text: str) -> int:
    """How many Python calls (and C calls) rendering the text makes: a count, not a time."""
    n = 0

    def count(frame, event, arg):
        nonlocal n
        n += 1

    sys.setprofile(count)
    try:
        markdown.render_uncached(text, "inceptionv1")
    finally:
        sys.setprofile(None)
    return n


@pytest.mark.parametrize(
    "unit", ['<a href="x">', "<code>", "[", "![", "*a", "[a](", "<", "&", "\\`", "<a href='x'><code>"]
)
def test_rendering_markdown_costs_linear_steps_in_hostile_text(unit):
    """Doubling a hostile text at most about doubles the counted steps of pre-pass and markdown-it together."""
    small, large = python_steps(at(unit, 2_000)), python_steps(at(unit, 4_000))
    assert large <= 2.3 * small, (small, large)


def test_texts_longer_than_any_limit_are_cut_before_rendering():
    assert markdown.MAX_TEXT >= MAX_BODY and markdown.MAX_TEXT >= MAX_DESCRIPTION
    assert markdown.from_distill("a" * (markdown.MAX_TEXT + 10), "") == "a" * markdown.MAX_TEXT


def test_the_bounded_diff_writes_what_difflib_writes():
    import difflib

    before = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n"
    after = "one\n2\nthree\nfour\nfive\nsix\nseven\neight\nnine"
    patch = textdiff.unified(before, after, "@1", "@2")
    want = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "@1", "@2"))
    assert patch.text == want and not patch.too_large


def _revision(revision: int, body: str) -> ClaimRevisionRow:
    """A claim revision that differs from another only by its number and body."""
    return ClaimRevisionRow(
        claim_id=1,
        revision=revision,
        author_id=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        label="a label",
        body=body,
        kind="FEATURE",
        status="PROPOSED",
        confidence=None,
        subjects=[],
        circuit_id=None,
        circuit_revision=None,
        evidence=[],
        message="",
        author="amy",
        author_display="",
    )


def test_a_diff_past_its_bound_is_too_large_after_bounded_work():
    """At the body limit the hostile pair stops at the matcher's bound (and within it, however large the input)."""
    before, after = hostile_pair(MAX_BODY)
    textdiff.CACHE.clear()
    patch = textdiff.unified(before, after, "@1", "@2")
    lines = before.count("\n") + after.count("\n")
    assert patch.too_large and patch.text is None
    assert patch.work <= textdiff.MAX_WORK + lines
    changes = claim_diff(_revision(1, before), _revision(2, after), check=deadline.check)
    assert changes == [{"field": "body", "before": before, "after": after, "patch": None, "too_large": True}]


def test_a_diff_stops_at_the_request_deadline_and_is_not_cached():
    before, after = hostile_pair(6_000)
    textdiff.CACHE.clear()
    checks = []

    def counted_check():
        checks.append(1)
        deadline.check()

    token = deadline.DEADLINE.set(time.monotonic() - 1)  # a request whose time is already up
    try:
        with pytest.raises(RequestTimeout):
            claim_diff(_revision(1, before), _revision(2, after), counted_check)
    finally:
        deadline.DEADLINE.reset(token)
    assert len(checks) == 1  # it stopped at its first check: no work went on
    assert len(textdiff.CACHE) == 0
    done = textdiff.unified(before, after, "@1", "@2")  # without a deadline it completes
    assert not done.too_large and done.text


def counting(monkeypatch, module, name):
    """Wraps module.name to record the thread of each call."""
    threads = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return threads


def test_a_claim_page_renders_its_body_once_off_the_event_loop(api, accounts, monkeypatch):
    """Rendering is counted where markdown-it is asked for (``_md``, in the old code as in the new): once for two
    views of a revision, on the OffLoop's threads. (The body is hostile but small: its size is the tests' above.)"""
    body = at('<a href="x">', 1_200) + f" {uuid.uuid4()}"
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": "hostile body", "kind": "FAMILY", "subjects": ["InceptionV1 3b:1"], "body": body}},
    )
    assert "errors" not in made, made
    number = made["data"]["createClaim"]["key"].split(":")[1]
    renders = counting(monkeypatch, markdown, "_md")
    assert api.get(f"/c/{number}").status_code == 200
    assert api.get(f"/c/{number}/1").status_code == 200  # the same revision again: from the cache
    assert len(renders) == 1, renders
    assert all(t.startswith("kb-exec") for t in renders), renders  # the OffLoop's threads, not the event loop


def test_a_claim_diff_past_the_bound_says_so_and_the_page_shows_both_versions(api, accounts):
    before, after = hostile_pair(MAX_BODY)
    token = accounts["editor"]["token"]
    made = as_user(
        api,
        token,
        CREATE,
        {"input": {"label": "hostile diff", "kind": "FAMILY", "subjects": ["InceptionV1 3b:1"], "body": before}},
    )["data"]["createClaim"]
    edited = as_user(api, token, UPDATE, {"key": made["key"], "rev": 1, "patch": {"body": after}})
    assert "errors" not in edited, edited
    data = gql(
        api,
        "query($k: String!) { claim(key: $k) { diff(from: 1, to: 2) { field before after patch tooLarge } "
        "revisions { diffFromPrevious { field patch tooLarge } } } }",
        {"k": made["key"]},
    )
    assert "errors" not in data, data
    claim = data["data"]["claim"]
    assert claim["diff"] == [{"field": "body", "before": before, "after": after, "patch": None, "tooLarge": True}]
    assert claim["revisions"][1]["diffFromPrevious"] == [{"field": "body", "patch": None, "tooLarge": True}]
    page = api.get(f"/c/{made['key'].split(':')[1]}/2")
    assert page.status_code == 200
    assert "too large to compare line by line" in page.text
    assert f"<del>{before[:60]}" in page.text and f"<ins>{after[:60]}" in page.text


def test_a_circuit_page_diffs_and_renders_off_the_event_loop_once_per_revision(api, accounts, monkeypatch):
    """Three revisions, two of them hostile to the diff at the description limit: the page's diffs run on the
    OffLoop's threads, each pair's text diff is computed once (the second view finds them cached), the too-large
    one says so; the description's Markdown is rendered once."""
    token = accounts["editor"]["token"]
    first, second = hostile_pair(MAX_DESCRIPTION)
    third = at('<a href="x">', 1_200) + f" {uuid.uuid4()}"
    made = as_user(
        api,
        token,
        CREATE_CIRCUIT,
        {
            "i": {
                "name": "hostile",
                "description": first,
                "edges": [{"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447"}],
            }
        },
    )
    assert "errors" not in made, made
    key = made["data"]["createCircuit"]["key"]
    for rev, text in ((1, second), (2, third)):
        done = as_user(api, token, UPDATE_CIRCUIT, {"k": key, "r": rev, "p": {"description": text}})
        assert "errors" not in done, done
    diffs = counting(monkeypatch, circuit_domain, "diff")
    textdiff.CACHE.clear()
    matchers = counting(monkeypatch, textdiff, "_Bounded")
    renders = counting(monkeypatch, markdown, "_md")
    page = api.get(f"/circuits/{key.split(':')[1]}")
    assert page.status_code == 200
    assert "too large to compare line by line" in page.text
    assert len(diffs) == 2 and all(t.startswith("kb-exec") for t in diffs), diffs
    assert len(renders) == 1 and renders[0].startswith("kb-exec"), renders
    assert len(matchers) == 2  # the description of 1→2 and of 2→3
    assert api.get(f"/circuits/{key.split(':')[1]}").status_code == 200
    assert len(matchers) == 2 and len(renders) == 1  # the second view diffs and renders nothing again
