"""The query rate limit (KB_QUERY_RATE_LIMIT, per client address) on every dynamic route: /graphql and pages.

The pages (/n/..., /c/..., /search, /explore, /circuits...) run the same resolvers as /graphql, so they count
against the same limit, in one counter per address (kb.web.ratelimit.RateLimits.query). Pure ASGI middleware,
outside the session look-up: a refused request costs one counter hit and touches no database. A refused
/graphql request is answered as before (JSON, code RATE_LIMITED, ``retryAfter``), a page with a 429 page; both
carry ``Retry-After``. The pages' own files (/static), content-addressed images (/artifacts) and /health are
not counted: they run no resolver.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.web.client_address import client_address
from kb.web.graphql_endpoint import send_error
from kb.web.pages import message_page
from kb.web.ratelimit import RateLimits

EXEMPT = ("/static/", "/artifacts/", "/health", "/metrics")


class RequestLimit:
    def __init__(self, app: ASGIApp, rates: RateLimits) -> None:
        self.app = app
        self.rates = rates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT) or not self.rates.queries:
            return await self.app(scope, receive, send)
        wait = await self.rates.query(client_address(scope))
        if not wait:
            return await self.app(scope, receive, send)
        retry = [(b"retry-after", str(max(1, round(wait))).encode())]
        message = f"too many requests from this address: retry in {wait:.1f} s"
        if scope["path"].startswith("/graphql"):
            return await send_error(send, message, "RATE_LIMITED", 429, headers=retry, retryAfter=round(wait, 1))
        response = message_page(Request(scope), "Too many requests", message, 429)
        response.headers["retry-after"] = retry[0][1].decode()
        await response(scope, receive, send)
