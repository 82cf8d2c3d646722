"""Who is signed in, for the pages: a session cookie looked up once per page request, in a thread.

Pure ASGI middleware. For requests that render pages (not /graphql, /static, /artifacts, /health, /events), a
``kb_session`` cookie is looked up and the live session (``kb.claims.sessions.SessionInfo``) or None is put in
``scope["kb.session"]``; templates read it through ``signed_in(request)``: base.html shows "Sign in" or the
name with "Sign out", and the CSRF token in ``<meta name="csrf-token">`` for scripts that post.

Those answers depend on the cookie (``Vary: Cookie``), and a signed-in one, which carries the session's CSRF
token and name, is ``Cache-Control: private, no-store``: no shared cache may hand it to another reader.
"""

from __future__ import annotations

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.app.sign_in import session_of
from kb.claims import sessions

SKIP = ("/graphql", "/static/", "/artifacts/", "/health", "/events")
SCOPE_KEY = "kb.session"
PRIVATE = b"private, no-store"


class CurrentSession:
    def __init__(self, app: ASGIApp, engine: sa.Engine):
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(SKIP):
            return await self.app(scope, receive, await look_up(scope, send, self.engine))
        await self.app(scope, receive, send)


async def look_up(scope: Scope, send: Send, engine: sa.Engine) -> Send:
    """Put the request's live session (or None) in ``scope`` for ``signed_in``; returns ``send`` that marks the
    answer as depending on the cookie, and private when signed in. The middleware does this for every page;
    GraphiQL (under /graphql, which it skips) does it for its own page."""
    secret = _cookie(scope, sessions.COOKIE)
    scope[SCOPE_KEY] = await run_in_threadpool(session_of, engine, secret) if secret else None
    return _uncached(send, private=scope[SCOPE_KEY] is not None)


def _uncached(send: Send, private: bool) -> Send:
    """``send`` with ``Vary: Cookie`` on the answer, and ``Cache-Control: private, no-store`` when signed in."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or ())
            if private and not any(k == b"cache-control" and b"no-store" in v for k, v in headers):
                headers = [(k, v) for k, v in headers if k != b"cache-control"] + [(b"cache-control", PRIVATE)]
            vary = next((i for i, (k, _) in enumerate(headers) if k == b"vary"), None)
            if vary is None:
                headers.append((b"vary", b"Cookie"))
            elif b"cookie" not in headers[vary][1].lower():
                headers[vary] = (b"vary", headers[vary][1] + b", Cookie")
            message["headers"] = headers
        await send(message)

    return sending


def signed_in(request: HTTPConnection) -> sessions.SessionInfo | None:
    """The page request's live session, or None (also where the middleware did not run)."""
    info: sessions.SessionInfo | None = request.scope.get(SCOPE_KEY)
    return info


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(name)
    return None
