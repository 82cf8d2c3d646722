"""The pages' work on user text (Markdown, diffs), off the event loop and under the request's deadline.

A page's Markdown and diffs run on the same bounded pool of threads as its GraphQL (kb.schema.offloop), with the
request's deadline set there: the bounded diff (kb.claims.textdiff) checks it between steps, so the work of a
request that has timed out stops. Past the deadline the page answers TIMEOUT (503), as for its queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from kb.claims import circuits as circuit_domain
from kb.schema import deadline
from kb.schema.errors import RequestTimeout
from kb.web import markdown
from kb.web.page_query import failed


async def off_loop(offloop: Any, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on the pages' thread pool (Starlette's when there is none); QueryFailed (TIMEOUT) past the
    request's time limit, which the application answers with the message page."""
    try:
        if offloop is None:
            return await run_in_threadpool(fn, *args)
        return await offloop.call(fn, *args)
    except RequestTimeout as exc:
        raise failed(name, [GraphQLError(str(exc), original_error=exc)]) from None


async def render(offloop: Any, text: str, model: str) -> Markup:
    """A claim body or a circuit description as HTML (kb.web.markdown.render: linear, cached)."""
    html: Markup = await off_loop(offloop, "MARKDOWN", markdown.render, text, model)
    return html


def circuit_diffs(revisions: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each revision's changes from the one before (bounded text diffs; stops at the request's deadline)."""
    return {
        r["revision"]: circuit_domain.diff(revisions[i - 1], r, deadline.check)
        for i, r in enumerate(revisions)
        if i > 0
    }


def circuit_texts(
    revisions: list[dict[str, Any]], description: str, model: str
) -> tuple[dict[int, dict[str, Any]], Markup]:
    """A circuit page's text work in one trip to the pool: the history's diffs and the description's HTML."""
    return circuit_diffs(revisions), markdown.render(description or "", model)


def circuit_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return circuit_domain.diff(before, after, deadline.check)
