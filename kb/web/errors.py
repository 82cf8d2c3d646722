"""What the server answers when no page does: not found (with the one redirect, a trailing slash dropped), and
server errors, all with the security headers.

Starlette's error middleware (the 500 answer) sits outside every middleware an application adds, so
``SecuredStarlette`` puts the security headers around the whole stack instead of adding them as a middleware.
Starlette's own trailing-slash redirect is built from the request's Host header (``Host: evil.example`` sent
readers to http://evil.example/circuits): it is off, and ``not_found`` redirects to the same path on this
server with a relative Location instead.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp

from kb.web.security import SecurityHeaders


class SecuredStarlette(Starlette):
    """Starlette with the security headers outermost: on 500 answers too, and no slash redirect of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


async def not_found(request: Request, exc: Exception) -> Response:
    """404, or a relative redirect to the path without its trailing slash when a route serves that one."""
    path = request.scope["path"]
    target = "/" + path.strip("/")
    # "//host" or "/\host" as a Location is another site to a browser: never redirect there
    if path.endswith("/") and target != "/" and target[1] not in "/\\" and _routed(request, target):
        query = request.scope.get("query_string", b"").decode("latin-1")
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=307)
    return PlainTextResponse("not found", status_code=404)


def _routed(request: Request, path: str) -> bool:
    scope = {**request.scope, "path": path}
    return any(route.matches(scope)[0] != Match.NONE for route in request.app.router.routes)
