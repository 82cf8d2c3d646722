"""Security headers on every HTTP response of the pages and the API, from one ASGI middleware.

The Content-Security-Policy allows scripts, styles and images from this server only, no inline script, no
framing (``frame-ancestors 'none'``: the forms cannot be clickjacked), and forms that post only here.

One relaxed policy, scoped to the GraphiQL page (GET /graphql answered with HTML): its inline scripts are
allowed by their sha256 (computed from the page actually sent, so nothing else inline runs), and inline styles
and ``data:`` images and fonts, which GraphiQL's editor uses. No other host is ever allowed: GraphiQL is served
from /static (kb.web.graphiql), and a page that names a CDN gets its scripts refused. Everything else keeps the
strict policy.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def graphiql_csp(body: bytes) -> str:
    """The policy for one GraphiQL page: its own inline scripts (by hash); files from this server only."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(body)
    ]
    return (
        f"default-src 'self'; script-src 'self' {' '.join(hashes)}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ).replace(" ;", ";")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, graphiql_path: str = "/graphql"):
        self.app = app
        self.graphiql_path = graphiql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "GET" and scope["path"] == self.graphiql_path:
            return await self._graphiql(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _add(list(message.get("headers") or []), STRICT_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _graphiql(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold back an HTML answer's start until its body is read (to hash its scripts); others pass through."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    start = message
                    return
                message["headers"] = _add(headers, STRICT_CSP)
                await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                start["headers"] = _add(
                    [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    + [(b"content-length", str(len(body)).encode())],
                    graphiql_csp(body),
                )
                await send(start)
                await send({"type": "http.response.body", "body": body})
            else:
                await send(message)

        await self.app(scope, receive, sending)


def _add(headers: list[tuple[bytes, bytes]], csp: str) -> list[tuple[bytes, bytes]]:
    have = {k.lower() for k, _ in headers}
    out = headers + [(k, v) for k, v in COMMON if k not in have]
    if b"content-security-policy" not in have:
        out.append((b"content-security-policy", csp.encode()))
    return out
