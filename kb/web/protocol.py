"""uvicorn's httptools protocol with deadlines for slow clients and a cap on the request head.

uvicorn closes idle keep-alive connections, but not one that sends half a request and stops, or trickles its
body a byte at a time, and httptools takes headers of any size. Here (settings KB_HEADER_TIMEOUT_S,
KB_BODY_TIMEOUT_S, KB_MAX_HEADER_BYTES):

- a request's line and headers must arrive within the header timeout of its first byte (or of the
  connection's opening), else 408 and the connection is closed;
- its body must be complete within the body timeout of the headers, else 408 and close;
- a request line and headers over the size cap get 431 and the connection is closed as soon as the cap is
  passed (at most one read beyond it is ever held).

``kb serve`` runs uvicorn with ``http="kb.web.protocol:GuardedHttpToolsProtocol"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kb.settings import get_settings


def _response(status: int, reason: str) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_s
        self.body_timeout = settings.body_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self._timer: asyncio.TimerHandle | None = None
        self._heading = True  # between a request's first byte (or the connection's start) and its headers' end
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._heading and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._heading, self._head_bytes = True, 0
        if self._timer is None:
            self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._heading = False
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._heading, self._head_bytes = True, 0  # the next request's head, counted from its first byte

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse(408, "Request Timeout")

    def _refuse(self, status: int, reason: str) -> None:
        self._refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_response(status, reason))
        self.transport.close()
