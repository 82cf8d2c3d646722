"""Relay-style pagination over ordered lists: the page information of a window (kb.app.paging: the offsets, the
cursors, the page size limits)."""

from __future__ import annotations

import strawberry

from kb.app.paging import DEFAULT_PAGE, MAX_PAGE, cursor, window


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def page_info(start: int, stop: int, total: int) -> PageInfo:
    return PageInfo(
        has_next_page=stop < total,
        has_previous_page=start > 0,
        start_cursor=cursor(start) if stop > start else None,
        end_cursor=cursor(stop - 1) if stop > start else None,
    )


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "PageInfo", "cursor", "page_info", "window"]
