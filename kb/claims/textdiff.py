"""Unified diffs of user text with a bound on their work, computed once per pair of texts.

difflib's SequenceMatcher is quadratic in the number of lines at best and about cubic on texts built for it
(a hundred distinct short lines in a different order in each version: 4,000 lines took half a second, 8,000 four
seconds, a 100,000-character body hours). Here the matcher counts its work: each ``find_longest_match`` adds the
lines it scans and the candidate matches it will look at, and past ``MAX_WORK`` the diff stops and answers
``too_large``: the caller shows both versions instead. Each call also runs the caller's ``check`` (a request's
deadline: kb.schema.deadline.check), so the work of a request that has timed out stops there.

Answers are kept in a bounded LRU by the texts' sha256 and the two labels: revisions never change, so a pair of
revisions is diffed once.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kb.lru import SizedLRU

MAX_WORK = 2_000_000  # lines scanned + candidate matches looked at (about a second of the matcher at most)


@dataclass(frozen=True)
class Patch:
    text: str | None  # the unified diff; None when too large
    too_large: bool
    work: int  # what the matcher counted (for the tests and the bench)


class TooLarge(Exception):
    pass


class _Bounded(difflib.SequenceMatcher[str]):
    def __init__(self, a: Sequence[str], b: Sequence[str], budget: int, check: Callable[[], None] | None):
        self.work = 0
        self.budget = budget
        self.check = check
        self._lines_a, self._n_b = a, len(b)
        super().__init__(None, a, b)
        self._b2j: dict[str, list[int]] = getattr(self, "b2j")  # noqa: B009 (the matcher's index, set just above)

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        a, b2j = self._lines_a, self._b2j
        if ahi is None:
            ahi = len(a)
        if bhi is None:
            bhi = self._n_b
        if self.check is not None:
            self.check()
        self.work += (ahi - alo) + (bhi - blo)
        for i in range(alo, ahi):  # what the matcher's inner loop will visit: bounded before it runs
            self.work += len(b2j.get(a[i], ()))
            if self.work > self.budget:
                raise TooLarge
        if self.work > self.budget:
            raise TooLarge
        return super().find_longest_match(alo, ahi, blo, bhi)


def _range(start: int, stop: int) -> str:
    """difflib's unified range: 'start,length' (1-based; an empty range names the line before it)."""
    beginning, length = start + 1, stop - start
    if length == 1:
        return str(beginning)
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


def _unified(a: Sequence[str], b: Sequence[str], from_label: str, to_label: str, m: _Bounded) -> Iterator[str]:
    """What difflib.unified_diff writes, from our matcher."""
    started = False
    for group in m.get_grouped_opcodes(3):
        if not started:
            started = True
            yield f"--- {from_label}\n"
            yield f"+++ {to_label}\n"
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                yield from ("-" + line for line in a[i1:i2])
            if tag in ("replace", "insert"):
                yield from ("+" + line for line in b[j1:j2])


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


CACHE: SizedLRU[Patch] = SizedLRU(entries=2048, total=16_000_000, size=lambda p: len(p.text or "") + 64)


def unified(
    before: str,
    after: str,
    from_label: str,
    to_label: str,
    check: Callable[[], None] | None = None,
    budget: int = MAX_WORK,
) -> Patch:
    """The unified diff of two texts by lines (as difflib.unified_diff), or too_large past ``budget``."""
    key = (_sha(before), _sha(after), from_label, to_label, budget)
    found = CACHE.get(key)
    if found is not None:
        return found
    a, b = before.splitlines(True), after.splitlines(True)
    m = _Bounded(a, b, budget, check)
    try:
        patch = Patch("".join(_unified(a, b, from_label, to_label, m)), False, m.work)
    except TooLarge:
        patch = Patch(None, True, m.work)
    CACHE.put(key, patch)
    return patch
