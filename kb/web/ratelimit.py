"""Rate limits (the ``limits`` library): queries per client address, mutations per account.

With Redis configured (KB_REDIS_URL, or a redis:// KB_BROKER_URL) the counters live there, so every server
process counts against one limit; otherwise they live in this process. Queries are counted on the event loop
(the asyncio storage: no blocking call there); mutations where they execute, on a worker thread (the
synchronous storage), once the caller's account is known: every token of an account shares its limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond, parse_many
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from kb import metrics
from kb.settings import Settings

log = logging.getLogger("kb.web")
PREFIX = "kb-rate"


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    broker = settings.broker_url
    return broker if broker.startswith(("redis://", "rediss://")) else ""


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        redis = redis_url(settings)
        # one knowledge base's counters: deployments (and test sessions) sharing a Redis do not share limits
        prefix = f"{PREFIX}-{hashlib.sha256(settings.db_url.encode()).hexdigest()[:10]}"
        self._new_async_storage: Callable[[], AsyncStorage]
        self.storage: Storage
        if redis:
            from limits.aio.storage import RedisStorage as AsyncRedis
            from limits.storage import RedisStorage

            # an asyncio Redis client belongs to the loop it first ran on: one per loop (one in a server)
            self._new_async_storage = lambda: AsyncRedis("async+" + redis, implementation="redispy", key_prefix=prefix)
            self.storage = RedisStorage(redis, key_prefix=prefix)
        else:
            from limits.aio.storage import MemoryStorage as AsyncMemory
            from limits.storage import MemoryStorage

            memory = AsyncMemory()
            self._new_async_storage = lambda: memory  # the counts live in it: the same one on every loop
            self.storage = MemoryStorage()
        self.where = "redis" if redis else "memory"
        self.queries: list[RateLimitItem] = parse_many(settings.query_rate_limit) if settings.query_rate_limit else []
        # KB_RATE_LIMIT_PER_MINUTE on average in bursts of up to KB_RATE_LIMIT_BURST: `burst` per window of
        # burst/rate minutes (a fixed window: one counter per account in Redis)
        self.mutations: list[RateLimitItem] = []
        rate, burst = settings.rate_limit_per_minute, settings.rate_limit_burst
        if rate > 0 and burst > 0:
            self.mutations.append(RateLimitItemPerSecond(burst, max(1, round(burst * 60 / rate))))
        elif rate > 0:
            self.mutations.append(RateLimitItemPerMinute(max(1, int(rate))))
        self._async: tuple[asyncio.AbstractEventLoop, AsyncFixedWindow] | None = None
        self.limiter = FixedWindowRateLimiter(self.storage)

    @property
    def async_limiter(self) -> AsyncFixedWindow:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            self._async = (loop, AsyncFixedWindow(self._new_async_storage()))
        return self._async[1]

    async def query(self, address: str) -> float:
        """0 if this address may send another query now, else the seconds until it may."""
        for item in self.queries:
            if not await self.async_limiter.hit(item, "q", address):
                metrics.RATE_LIMITED.labels("query").inc()
                stats = await self.async_limiter.get_window_stats(item, "q", address)
                return max(0.1, stats.reset_time - time.time())
        return 0.0

    def mutation(self, account_id: int, cost: int = 1) -> float:
        """0 if this account may send another mutation now, else the seconds until it may. ``cost``: what it
        counts as (a requestRender counts its units: kb.schema.context.Context.rate_limit)."""
        for item in self.mutations:
            if not self.limiter.hit(item, "m", str(account_id), cost=cost):
                metrics.RATE_LIMITED.labels("mutation").inc()
                return max(0.1, self.limiter.get_window_stats(item, "m", str(account_id)).reset_time - time.time())
        return 0.0
