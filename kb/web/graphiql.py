"""GraphiQL from the vendored builds in static/vendor (React 18.3.1, GraphiQL 3.8.3): a browser asking /graphql
for HTML gets the IDE, which then POSTs to /graphql; every other request goes to the GraphQL endpoint."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kb.web.templating import templates


class GraphiQL:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if "text/html" in accept:
                request = Request(scope, receive)
                response = templates().TemplateResponse(request, "graphiql.html", {})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
