"""Pages of ordered lists: which offsets a page of ``first`` items after a cursor holds, and the opaque offset
cursors themselves. The GraphQL connections (kb.schema.pagination) and the use cases that list (neighbours, claims)
share them, so that a cursor one hands out the other takes."""

from __future__ import annotations

import base64

from kb.app.errors import BadRequest, OverLimit

MAX_PAGE = 100
DEFAULT_PAGE = 10


def cursor(offset: int) -> str:
    return base64.b64encode(f"o:{offset}".encode()).decode()


def window(first: int | None, after: str | None, total: int) -> tuple[int, int]:
    """(start, stop) offsets of the page: BAD_INPUT for a negative size or a cursor of no list of offsets,
    LIMIT_EXCEEDED past MAX_PAGE."""
    n = DEFAULT_PAGE if first is None else first
    if n < 0:
        raise BadRequest("first must not be negative")
    if n > MAX_PAGE:
        raise OverLimit(f"first is at most {MAX_PAGE} (asked for {n})")
    start = 0
    if after is not None:
        try:
            tag, value = base64.b64decode(after.encode(), validate=True).decode().split(":", 1)
        except (ValueError, UnicodeError):
            tag, value = "", ""
        if tag != "o" or not (value.isascii() and value.isdigit() and len(value) <= 12):
            raise BadRequest(f"after is not a cursor of this list: {after[:40]!r}")
        start = int(value) + 1
    return start, min(start + n, total)
