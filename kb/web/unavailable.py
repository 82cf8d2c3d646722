"""A full database pool outside GraphQL's own error handling answers 503 with Retry-After, not a bare 500.

GraphQL requests carry the pool's refusal as a coded error (``UNAVAILABLE`` with ``extensions.retryAfter``,
kb.schema.errors) and a ``Retry-After`` header (``retry_after_header``). Work around them can also wait for a
connection: the pages' sign-in lookup (kb.web.auth.current), the sign-in pages, live events. Their
``PoolExhausted`` reaches this middleware, which answers 503 (JSON with the code for /graphql, text elsewhere)
when the response has not started yet.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb.db.engine import PoolExhausted


class Unavailable:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except PoolExhausted as exc:
            if started:
                raise
            wait = exc.extensions.get("retryAfter", 1)
            if scope["path"].startswith("/graphql"):
                body = orjson.dumps(
                    {"errors": [{"message": str(exc), "extensions": {"code": exc.code, **exc.extensions}}]}
                )
                ctype = b"application/json"
            else:
                body, ctype = str(exc).encode(), b"text/plain; charset=utf-8"
            headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": [*headers, retry_after(wait)]})
            await send({"type": "http.response.body", "body": body})


def retry_after(seconds: object) -> tuple[bytes, bytes]:
    """A Retry-After header of whole seconds (at least 1)."""
    try:
        wait = max(1, round(float(seconds)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        wait = 1
    return b"retry-after", str(wait).encode()


def retry_after_header(errors: list[dict[str, Any]] | None) -> tuple[bytes, bytes] | None:
    """The Retry-After header a GraphQL response needs: the longest ``retryAfter`` of its UNAVAILABLE errors."""
    waits = [
        (e.get("extensions") or {}).get("retryAfter", 1)
        for e in errors or ()
        if (e.get("extensions") or {}).get("code") == "UNAVAILABLE"
    ]
    return retry_after(max(waits)) if waits else None
