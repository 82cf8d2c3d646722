"""A token bucket per API token: ``rate`` requests a minute on average, bursts up to ``burst``.

In-process: each API process limits on its own (with N processes a token gets up to N times the rate).
"""

from __future__ import annotations

import threading
import time


class TokenBuckets:
    def __init__(self, per_minute: float, burst: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self.buckets: dict[int, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, key: int) -> float:
        """0 if allowed, else the seconds to wait."""
        now = self.clock()
        with self.lock:
            tokens, at = self.buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self.buckets[key] = (tokens - 1.0, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")
