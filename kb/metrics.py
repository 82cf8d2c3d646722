"""Prometheus metrics: what whoever runs kb serve and kb worker watches (prometheus-client).

Defined once here and counted where things happen (the GraphQL endpoint, the pages, the rate limits, the compiled
plans, the render runner and its keep-alive); exposed by ``kb serve`` at /metrics (kb.web.metrics_route) and by
``kb worker --metrics-port`` on its own port. Figures that live in the database (render jobs by lane and state:
the queue's depth) are read when scraped, so every API process reports the same numbers.

**Several processes.** ``kb serve --workers N`` and ``kb worker --concurrency N`` count in N processes: they set
PROMETHEUS_MULTIPROC_DIR (a fresh folder: kb.metrics_folder.use_folder) before anything imports this module, every
process writes its counts there, and a scrape of any of them adds them up (prometheus-client's multiprocess mode).
prometheus-client picks the mode when it is first imported, hence the folder's own module.

No framework here: callers pass plain values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.registry import Collector

from kb.metrics_folder import FOLDER_ENV

CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_JOBS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

GRAPHQL_REQUESTS = Counter(
    "kb_graphql_requests",
    "GraphQL requests by operation type and outcome (ok, or the code of the answer's first error)",
    ["operation", "outcome"],
)
GRAPHQL_SECONDS = Histogram(
    "kb_graphql_request_seconds", "GraphQL request latency by operation type", ["operation"], buckets=_FAST
)
PAGE_SECONDS = Histogram(
    "kb_page_request_seconds",
    "page latency (HTML routes) by route and status class",
    ["route", "status"],
    buckets=_FAST,
)
RATE_LIMITED = Counter("kb_rate_limit_refusals", "requests refused by a rate limit", ["limit"])
COMPILED = Counter(
    "kb_compiled_plans",
    "GraphQL queries answered by a compiled plan (answered; inline: on the event loop) or by strawberry in place of "
    "a plan that failed (fallback)",
    ["result"],
)
GRAPH_BYTES = Gauge(
    "kb_graph_memory_bytes",
    "memory of each model's loaded graph in a server process (as of that process's last scrape)",
    ["model"],
    multiprocess_mode="liveall",
)
RENDER_JOB_SECONDS = Histogram(
    "kb_render_job_seconds",
    "render jobs' wall time in a worker, by kind, lane and how the attempt ended (done, failed, retry, cancelled)",
    ["kind", "lane", "outcome"],
    buckets=_JOBS,
)
WORKER_HEARTBEAT = Gauge(
    "kb_worker_heartbeat_timestamp_seconds",
    "when a worker process last renewed its jobs' lease or started or ended a job (unix time)",
    ["worker"],
    multiprocess_mode="max",
)


def _every_process() -> CollectorRegistry:
    """A registry of the counts every process wrote to the folder (prometheus-client's multiprocess mode)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def _registry() -> CollectorRegistry:
    """This process's metrics, or in multiprocess mode every process's of the folder."""
    return _every_process() if os.environ.get(FOLDER_ENV) else REGISTRY


def serve_http(port: int, host: str) -> None:
    """The metrics over HTTP, from a thread (kb worker's port)."""
    start_http_server(port, host, registry=_registry())


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text a scrape gets: this process's metrics (every process's, in multiprocess mode) and ``extra``
    collectors' (read when scraped)."""
    out = generate_latest(_registry())
    more = CollectorRegistry(auto_describe=True)
    for c in extra:
        more.register(c)
    return out + generate_latest(more)
