"""/metrics: Prometheus' scrape of kb serve (kb.metrics, in multiprocess mode every server process's counts), with
what the database knows read at scrape time (render jobs by lane and state, the workers holding leases) and each
loaded graph's memory; and ``PageTimer``, the pages' latency by route.

KB_METRICS=false answers 404; KB_METRICS_ALLOW lists the addresses or networks that may scrape (403 for others;
the client address is the one kb.web.client_address settled, through trusted proxies)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb import metrics
from kb.render import jobs
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings
from kb.web.client_address import TrustedProxies

PATH = "/metrics"


class DatabaseFigures(Collector):
    """The render queue as the job table has it: the same figures from every API process."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.engine.connect() as conn:
            counts, running = jobs.counts(conn), jobs.running_workers(conn)
        by_state = GaugeMetricFamily(
            "kb_render_jobs",
            "render jobs in the job table by lane and state (queued: the queue's depth)",
            labels=["lane", "status"],
        )
        for lane, status, n in counts:
            by_state.add_metric([lane, status.lower()], n)
        yield by_state
        holding = GaugeMetricFamily(
            "kb_render_worker_running_jobs", "RUNNING jobs each worker holds a lease on", labels=["worker"]
        )
        for worker, n in running:
            holding.add_metric([worker], n)
        yield holding


class MetricsRoute:
    def __init__(self, engine: sa.Engine, graphs: GraphCache, settings: Settings) -> None:
        self.enabled = settings.metrics
        self.allowed = TrustedProxies(settings.metrics_allow, "KB_METRICS_ALLOW") if settings.metrics_allow else None
        self.graphs = graphs
        self.database = DatabaseFigures(engine)

    async def handle(self, request: Request) -> Response:
        if not self.enabled:
            return PlainTextResponse("not found", status_code=404)
        host = request.client.host if request.client else ""
        if self.allowed is not None and not self.allowed.trusts(host):
            return PlainTextResponse("metrics are not served to this address (KB_METRICS_ALLOW)", status_code=403)
        return Response(await run_in_threadpool(self._scrape), media_type=metrics.CONTENT_TYPE)

    def _scrape(self) -> bytes:
        for g in self.graphs.memory():
            metrics.GRAPH_BYTES.labels(g["model"]).set(g["bytes"])
        return metrics.exposition([self.database])


class PageTimer:
    """Pages' latency by route template and status class (an ASGI middleware, innermost: the router's matched
    route is on the scope when the page has answered). GraphQL, streams, files and scrapes are not pages."""

    SKIP = ("/graphql", "/static/", "/artifacts/", PATH, "/events", "/health", "/uploads")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.SKIP):
            return await self.app(scope, receive, send)
        status = 500
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.PAGE_SECONDS.labels(route, f"{status // 100}xx").observe(time.perf_counter() - started)
