"""A small thread-safe LRU cache bounded by its number of entries and by the total size of its values."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SizedLRU(Generic[V]):
    """At most ``entries`` values whose ``size`` adds up to at most ``total``; the least recently used go first.
    A value larger than ``total`` is not kept."""

    def __init__(self, entries: int, total: int, size: Callable[[V], int]):
        self.entries = entries
        self.total = total
        self.size = size
        self.used = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        n = self.size(value)
        if n > self.total:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.used -= old[1]
            self._items[key] = (value, n)
            self.used += n
            while len(self._items) > self.entries or self.used > self.total:
                _, (_, dropped) = self._items.popitem(last=False)
                self.used -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0

    def __len__(self) -> int:
        return len(self._items)
