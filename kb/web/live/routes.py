"""Live updates as server-sent events, and the activity page.

``GET /events?neuron=KEY&claim=claim:N&circuit=circuit:N&model=M`` (each repeatable, any of them matching; none:
everything) streams ``event: activity`` messages whose data is the row as JSON and whose ``id`` is the row's
``seq``: its place in commit order (kb.claims.activity), not its id, which on PostgreSQL is not in commit order.
A browser's EventSource reconnects by itself with ``Last-Event-ID`` (or a client passes ``since=SEQ``) and first
gets what committed after that, in commit order: nothing skipped, nothing twice. A filtered stream also sends
``id: SEQ`` with no data (browsers keep the id and fire no event) when it has gone past rows the filter held
back, so that its next replay starts there. A stream ends after ``max_s`` seconds (the browser reconnects at once
and misses nothing), so that a server can stop without waiting on open streams.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from kb.claims import activity
from kb.claims.circuits import parse_key as parse_circuit_key
from kb.claims.claims import parse_key as parse_claim_key
from kb.claims.errors import ClaimProblem
from kb.claims.ids import row_id
from kb.graph.keys import KeyProblem
from kb.schema.errors import CodedError
from kb.serving.graph_cache import GraphCache
from kb.web.auth.pages import render
from kb.web.client_address import client_address
from kb.web.live.hub import Filter, Hub, Row

KEEPALIVE_S = 15.0
WATCHDOG_S = 2.0  # how often a quiet stream makes sure its follower runs
REPLAY_PAGE = 500  # rows read at a time when a stream replays what its client missed
REPLAY_PAGES = 4  # pages one connection replays at most: then it ends and the client resumes from its cursor


def event(row: Row) -> str:
    data = {
        "id": row["id"],
        "seq": row["seq"],
        "at": row["at"].isoformat(),
        "kind": row["kind"],
        "model": row["model_key"],
        "subject": row["subject"],
        "summary": row["summary"],
        "actor": row["actor"],
        "neurons": row["neurons"],
        "url": link(row),
    }
    return f"id: {row['seq']}\nevent: activity\ndata: {json.dumps(data)}\n\n"


def mark(seq: int) -> str:
    """An id without data: the browser keeps it (its next Last-Event-ID) and fires no event."""
    return f"id: {seq}\n\n"


def kind_of(text: str) -> str:
    """A ``kind`` parameter (any case) as an activity kind; ValueError names the kinds."""
    kind = text.strip().upper()
    if kind not in activity.KINDS:
        raise ValueError(f"kind {text!r}: one of {', '.join(k.lower() for k in activity.KINDS)}")
    return kind


def link(row: Row) -> str:
    """The page of what changed (a bulk render or a batch of thumbnails: its layer's page, or its model's when it
    spans layers)."""
    subject: str = row["subject"]
    if (subject.startswith("renders:") and row["neurons"]) or (
        subject.startswith("thumbnails:") and len(row["neurons"]) > 1
    ):
        layers = {n.rpartition(":")[0] for n in row["neurons"]}
        return f"/n/{layers.pop()}" if len(layers) == 1 else f"/n/{row['model_key']}"
    if subject.startswith("claim:"):
        number, _, rev = subject[len("claim:") :].partition("@")
        return f"/c/{number}" + (f"/{rev}" if rev else "")
    if subject.startswith("circuit:"):
        return f"/circuits/{subject[len('circuit:') :].partition('@')[0]}"
    if row["neurons"]:
        head, _, index = row["neurons"][0].rpartition(":")
        return f"/n/{head}/{index}"
    return "/activity"


class TooManyStreams(Exception):
    """This address holds KB_LIVE_STREAMS_PER_ADDRESS live streams (events and subscriptions) open already."""


class Live:
    def __init__(
        self,
        engine: sa.Engine,
        graphs: GraphCache,
        max_s: float = 25.0,
        poll_s: float = 1.0,
        per_address: int = 100,
    ):
        self.engine = engine
        self.graphs = graphs
        self.hub = Hub(engine, poll_s)
        self.max_s = max_s
        self.per_address = per_address
        self.open: Counter[str] = Counter()  # live streams open per client address (event-loop only: no lock)

    @contextmanager
    def admitted(self, address: str) -> Iterator[None]:
        """One more live stream for ``address``, or TooManyStreams past KB_LIVE_STREAMS_PER_ADDRESS."""
        if self.open[address] >= self.per_address:
            raise TooManyStreams(
                f"{self.per_address} live streams are open from this address already (KB_LIVE_STREAMS_PER_ADDRESS)"
            )
        self.open[address] += 1
        try:
            yield
        finally:
            self.open[address] -= 1
            if self.open[address] <= 0:
                del self.open[address]

    async def rows(
        self, models: set[str], kinds: set[str], since: int | None, request: HTTPConnection | None
    ) -> AsyncIterator[Row]:
        """A GraphQL subscription's changes: those after ``since`` (a seq) that commit from now on, matching the
        models and kinds (none given: all), in commit order, for as long as the client listens. Subscribed before
        the replay reads, as /events is: nothing between the two is lost or sent twice. A client that falls more
        than a queue behind gets an error naming the seq to resume from."""
        try:
            with self.admitted(client_address(request.scope) if request is not None else ""):
                async for row in self._follow(Filter(models=frozenset(models), kinds=frozenset(kinds)), since):
                    yield row
        except TooManyStreams as exc:
            raise CodedError(str(exc), "RATE_LIMITED") from None

    async def _follow(self, flt: Filter, cursor: int | None) -> AsyncIterator[Row]:
        sub = await run_in_threadpool(self.hub.subscribe, flt, asyncio.get_running_loop())
        try:
            while cursor is not None:  # what the client missed, a page at a time, in commit order
                rows = await run_in_threadpool(self._after, cursor)
                for row in rows:
                    if flt.matches(row):
                        yield row
                if rows:
                    cursor = rows[-1]["seq"]
                if len(rows) < REPLAY_PAGE:
                    break
            while not sub.overflowed:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), timeout=WATCHDOG_S)
                except TimeoutError:
                    if not self.hub.alive():  # it died: start it again (it goes on from its last row)
                        await run_in_threadpool(self.hub.ensure)
                    continue
                seq = item if isinstance(item, int) else item["seq"]
                if cursor is not None and seq <= cursor:
                    continue  # the replay sent it, or went past it
                cursor = seq
                if not isinstance(item, int):
                    yield item
            raise CodedError(
                f"this subscription fell behind the changes: subscribe again with since: {cursor}", "UNAVAILABLE"
            )
        finally:
            self.hub.unsubscribe(sub)

    def _filter(self, request: Request) -> Filter:
        q = request.query_params
        neurons: set[str] = set()
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
        kinds = frozenset(kind_of(t) for t in q.getlist("kind"))
        return Filter(frozenset(neurons), frozenset(claims), frozenset(circuits), frozenset(q.getlist("model")), kinds)

    async def events(self, request: Request) -> Response:
        try:
            flt = await run_in_threadpool(self._filter, request)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        since = request.headers.get("last-event-id") or request.query_params.get("since")
        cursor = row_id(since) if since else None  # the seq of the last row the client has
        if since and cursor is None:
            return PlainTextResponse("since (or Last-Event-ID) is an event id: ASCII digits", status_code=400)
        admitted = self.admitted(client_address(request.scope))
        try:
            admitted.__enter__()  # left when the stream ends (below), not when this handler returns
        except TooManyStreams as exc:
            return PlainTextResponse(str(exc), status_code=429, headers={"retry-after": "30"})
        # Subscribed before the replay reads: a row committed before this subscription is in the replay's read,
        # one committed after it reaches the queue; one in both is sent once (the queue's seq <= cursor).
        try:
            sub = await run_in_threadpool(self.hub.subscribe, flt, asyncio.get_running_loop())
        except BaseException:
            admitted.__exit__(None, None, None)
            raise

        async def stream() -> AsyncIterator[str]:
            nonlocal cursor
            try:
                yield "retry: 2000\n\n"
                end = time.monotonic() + self.max_s
                pages = 0
                while cursor is not None:  # what the client missed, a page at a time, in commit order
                    rows = await run_in_threadpool(self._after, cursor)
                    pages += 1
                    for row in rows:
                        if flt.matches(row):
                            yield event(row)
                    if rows:
                        cursor = rows[-1]["seq"]
                        if not flt.matches(rows[-1]):
                            yield mark(cursor)
                    if len(rows) < REPLAY_PAGE:
                        break
                    if pages >= REPLAY_PAGES or sub.overflowed or time.monotonic() > end:
                        return  # bounded: the client reconnects from the cursor (EventSource's retry)
                quiet_since, unsent = time.monotonic(), None
                while (left := end - time.monotonic()) > 0 and not sub.overflowed:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), timeout=min(WATCHDOG_S, left))
                    except TimeoutError:
                        if not self.hub.alive():  # it died: start it again (it goes on from its last row)
                            await run_in_threadpool(self.hub.ensure)
                        if time.monotonic() - quiet_since >= KEEPALIVE_S:
                            quiet_since = time.monotonic()
                            yield mark(unsent) if unsent else ": keepalive\n\n"
                            unsent = None
                        continue
                    seq = item if isinstance(item, int) else item["seq"]
                    if cursor is not None and seq <= cursor:
                        continue  # the replay sent it, or went past it
                    cursor = seq
                    if isinstance(item, int):  # past rows the filter held back: said at the next keepalive or end
                        unsent = seq
                    else:
                        quiet_since, unsent = time.monotonic(), None
                        yield event(item)
                if unsent:
                    yield mark(unsent)
            finally:
                self.hub.unsubscribe(sub)
                admitted.__exit__(None, None, None)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _after(self, seq: int) -> list[Row]:
        with self.engine.connect() as conn:
            return activity.after(conn, seq, REPLAY_PAGE)

    async def page(self, request: Request) -> Response:
        model = request.query_params.get("model") or None
        models = await run_in_threadpool(lambda: [r["key"] for r in self.graphs.model_rows() if not r["removed_at"]])
        kind, error = request.query_params.get("kind") or None, ""
        if kind:
            try:
                kind = kind_of(kind)
            except ValueError as exc:
                kind, error = None, str(exc)
        since, rows = await run_in_threadpool(self._recent, model, kind)
        chosen = {k: v for k, v in (("model", model), ("kind", kind)) if v}
        return render(
            request,
            "live/activity.html",
            status=400 if error else 200,
            title="Activity",
            rows=[{**r, "url": link(r)} for r in rows],
            model=model or "",
            kind=kind or "",
            kinds=activity.KINDS,
            error=error,
            since=since,
            models=models,
            stream="/events" + (f"?{urlencode(chosen)}" if chosen else ""),
        )

    def _recent(self, model: str | None, kind: str | None = None) -> tuple[int, list[Row]]:
        """Where the page's stream starts, then the rows it shows: read in that order, a row that commits between
        the two is both shown and streamed (activity.js shows it once), never neither."""
        with self.engine.connect() as conn:
            since = activity.last_seq(conn)
            return since, activity.recent(conn, model, None, 100, kind)


def live_routes(live: Live) -> list[Route]:
    return [
        Route("/events", live.events, methods=["GET"]),
        Route("/activity", live.page, methods=["GET"]),
    ]
