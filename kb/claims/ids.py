"""Row numbers in keys (claim:17, circuit:3@2): what counts as one."""

from __future__ import annotations


def is_row_id(text: str) -> bool:
    """ASCII digits that fit a 64-bit integer column (not '¹', not 20 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= 18
