"""Live updates as server-sent events, and the activity page.

``GET /events?neuron=KEY&claim=claim:N&circuit=circuit:N&model=M`` (each repeatable, any of them matching; none:
everything) streams ``event: activity`` messages whose ``id`` is the activity row's id and whose data is the row
as JSON. A browser's EventSource reconnects by itself with ``Last-Event-ID`` (or a client passes ``since=ID``) and
first gets what it missed. A stream ends after ``max_s`` seconds (the browser reconnects at once and misses
nothing), so that a server can stop without waiting on open streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kb.claims import activity
from kb.claims.circuits import parse_key as parse_circuit_key
from kb.claims.claims import parse_key as parse_claim_key
from kb.claims.errors import ClaimProblem
from kb.claims.ids import row_id
from kb.db.graph_cache import GraphCache
from kb.graph.keys import KeyProblem
from kb.web.auth.pages import render
from kb.web.live.hub import Filter, Hub

KEEPALIVE_S = 15.0
REPLAY_MAX = 500


def event(row: dict) -> str:
    data = {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "kind": row["kind"],
        "model": row["model_key"],
        "subject": row["subject"],
        "summary": row["summary"],
        "actor": row["actor"],
        "neurons": row["neurons"],
        "url": link(row),
    }
    return f"id: {row['id']}\nevent: activity\ndata: {json.dumps(data)}\n\n"


def link(row: dict) -> str:
    """The page of what changed."""
    subject = row["subject"]
    if subject.startswith("claim:"):
        number, _, rev = subject[len("claim:") :].partition("@")
        return f"/c/{number}" + (f"/{rev}" if rev else "")
    if subject.startswith("circuit:"):
        return f"/circuits/{subject[len('circuit:') :].partition('@')[0]}"
    if row["neurons"]:
        head, _, index = row["neurons"][0].rpartition(":")
        return f"/n/{head}/{index}"
    return "/activity"


class Live:
    def __init__(self, engine: sa.Engine, graphs: GraphCache, max_s: float = 25.0, poll_s: float = 1.0):
        self.engine = engine
        self.graphs = graphs
        self.hub = Hub(engine, poll_s)
        self.max_s = max_s

    def _filter(self, request: Request) -> Filter:
        q = request.query_params
        neurons = set()
        for text in q.getlist("neuron"):
            try:
                neurons.add(str(self.graphs.resolve(text)))
            except (KeyProblem, LookupError) as exc:
                raise ValueError(f"neuron {text!r}: {exc}") from None
        try:
            claims = {parse_claim_key(t) for t in q.getlist("claim")}
            circuits = {parse_circuit_key(t)[0] for t in q.getlist("circuit")}
        except ClaimProblem as exc:
            raise ValueError(str(exc)) from None
        return Filter(frozenset(neurons), frozenset(claims), frozenset(circuits), frozenset(q.getlist("model")))

    async def events(self, request: Request) -> Response:
        try:
            flt = await run_in_threadpool(self._filter, request)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        since = request.headers.get("last-event-id") or request.query_params.get("since")
        since_id = row_id(since) if since else None
        if since and since_id is None:
            return PlainTextResponse("since (or Last-Event-ID) is an event id: ASCII digits", status_code=400)
        sub = await run_in_threadpool(self.hub.subscribe, flt, asyncio.get_running_loop())

        async def stream():
            try:
                yield "retry: 2000\n\n"
                sent = since_id or 0
                if since_id is not None:
                    for row in await run_in_threadpool(self._after, since_id):
                        if flt.matches(row):
                            sent = row["id"]
                            yield event(row)
                end = time.monotonic() + self.max_s
                while (left := end - time.monotonic()) > 0 and not sub.overflowed:
                    try:
                        row = await asyncio.wait_for(sub.queue.get(), timeout=min(KEEPALIVE_S, left))
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    if row["id"] > sent:
                        yield event(row)
            finally:
                self.hub.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _after(self, since_id: int) -> list[dict]:
        with self.engine.connect() as conn:
            return activity.after(conn, since_id, REPLAY_MAX)

    async def page(self, request: Request) -> Response:
        model = request.query_params.get("model") or None
        rows = await run_in_threadpool(self._recent, model)
        models = await run_in_threadpool(lambda: [r["key"] for r in self.graphs.model_rows() if not r["removed_at"]])
        return render(
            request,
            "live/activity.html",
            title="Activity",
            rows=[{**r, "url": link(r)} for r in rows],
            model=model or "",
            models=models,
            stream="/events" + (f"?{urlencode({'model': model})}" if model else ""),
        )

    def _recent(self, model: str | None) -> list[dict]:
        with self.engine.connect() as conn:
            return activity.recent(conn, model, None, 100)


def live_routes(live: Live) -> list[Route]:
    return [
        Route("/events", live.events, methods=["GET"]),
        Route("/activity", live.page, methods=["GET"]),
    ]
