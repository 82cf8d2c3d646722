"""GraphiQL from the vendored builds in static/vendor (React 18.3.1, GraphiQL 3.8.3): a GET of /graphql with a
browser's Accept (text/html, or */* without a query: what strawberry would answer with its own GraphiQL from a CDN)
gets the IDE, which then POSTs to /graphql; every other request goes to the GraphQL endpoint."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.web.templating import templates


class GraphiQL:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if "text/html" in accept or ("*/*" in accept and not _has_query(scope)):
                request = Request(scope, receive)
                response = templates().TemplateResponse(request, "graphiql.html", {})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _has_query(scope: Scope) -> bool:
    return "query" in parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
