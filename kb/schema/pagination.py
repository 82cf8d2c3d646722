"""Relay-style pagination over ordered lists: opaque offset cursors, page size limits."""

from __future__ import annotations

import base64

import strawberry

from kb.schema.errors import bad_input, limit

MAX_PAGE = 100
DEFAULT_PAGE = 10


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def cursor(offset: int) -> str:
    return base64.b64encode(f"o:{offset}".encode()).decode()


def window(first: int | None, after: str | None, total: int) -> tuple[int, int]:
    """(start, stop) offsets of the page."""
    n = DEFAULT_PAGE if first is None else first
    if n < 0:
        raise bad_input("first must not be negative")
    if n > MAX_PAGE:
        raise limit(f"first is at most {MAX_PAGE} (asked for {n})")
    start = 0
    if after is not None:
        try:
            tag, value = base64.b64decode(after.encode(), validate=True).decode().split(":", 1)
        except (ValueError, UnicodeError):
            tag, value = "", ""
        if tag != "o" or not (value.isascii() and value.isdigit() and len(value) <= 12):
            raise bad_input(f"after is not a cursor of this list: {after[:40]!r}")
        start = int(value) + 1
    return start, min(start + n, total)


def page_info(start: int, stop: int, total: int) -> PageInfo:
    return PageInfo(
        has_next_page=stop < total,
        has_previous_page=start > 0,
        start_cursor=cursor(start) if stop > start else None,
        end_cursor=cursor(stop - 1) if stop > start else None,
    )
