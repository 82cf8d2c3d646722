"""GraphiQL from the vendored builds in static/vendor (React 18.3.1, GraphiQL 3.8.3): a GET of /graphql with a
browser's Accept (text/html, or */* without a query: what strawberry would answer with its own GraphiQL from a CDN)
gets the IDE, which then POSTs to /graphql; every other request goes to the GraphQL endpoint.

A signed-in reader's IDE carries the session's CSRF token (``<meta name="csrf-token">``, private and uncached as
every signed-in page is): static/graphiql-init.js repeats it in ``x-csrf-token``, which a request signed in by
cookie must send, so mutations run there as the signed-in account."""

from __future__ import annotations

from urllib.parse import parse_qs

import sqlalchemy as sa
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.web.auth.current import SCOPE_KEY, look_up
from kb.web.templating import templates


class GraphiQL:
    def __init__(self, app: ASGIApp, engine: sa.Engine | None = None):
        self.app = app
        self.engine = engine  # where the session cookie is looked up (None: the IDE is never signed in)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if "text/html" in accept or ("*/*" in accept and not _has_query(scope)):
                if self.engine is not None:
                    send = await look_up(scope, send, self.engine)
                else:
                    scope[SCOPE_KEY] = None
                request = Request(scope, receive)
                response = templates().TemplateResponse(request, "graphiql.html", {})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _has_query(scope: Scope) -> bool:
    return "query" in parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
