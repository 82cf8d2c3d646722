"""Row numbers in keys and forms (claim:17, circuit:3@2, /c/17/2, a token's id): what counts as one."""

from __future__ import annotations

import re

# Every id and revision column is a 32-bit INTEGER (PostgreSQL), and GraphQL's Int is 32-bit too: a larger
# number names no row, and must not reach the database (SQLite refuses integers past 64 bits with an exception).
MAX_ROW_ID = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() also takes '²' and other digits int() refuses


def row_id(text: str | None) -> int | None:
    """The number ``text`` spells in ASCII digits when it fits an id column, else None (not '²', not 23 digits)."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_ROW_ID else None


def is_row_id(text: str) -> bool:
    return row_id(text) is not None
