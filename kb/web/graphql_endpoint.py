"""/graphql: strawberry's ASGI view, with compiled plans for queries it has seen before.

Every GraphQL request (GET or POST) is rate-limited per client address, then checked for NULs. The first time
a query document arrives it is compiled on a worker thread (kb.schema.compiled) and goes through strawberry
(parse, limits, validate, cost, execute off the loop: kb.schema); later requests with the same document have
their cost checked against the budget (cached per document and variable values) and run its plan, answered
directly with the cost in ``extensions``. A plan whose estimated cost is at most ``inline_cost`` (a neighbour
query's is about 50) runs on the event loop under ``io_guard.no_io()``: it reads only the loaded graph and the
catalog, in microseconds, and the moment it would touch the database (a cold model, a stale catalog, a kernel's
link program) it stops with NeedsIO and runs again on a worker thread. Larger plans go to the thread pool.
Anything unusual, including every error, takes strawberry's path. Whatever strawberry answers that is not JSON
(a 4xx in plain text) becomes a JSON error with a code.
"""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import parse_qs

import orjson
from graphql import GraphQLError, parse

from kb.db.engine import PoolExhausted
from kb.db.io_guard import NeedsIO, no_io
from kb.schema.compiled import Compiler, Fallback, NotCompilable, Plan
from kb.schema.errors import RequestTimeout
from kb.schema.limits import MAX_TOKENS, NUL_MESSAGE, has_nul
from kb.web.client_address import client_address
from kb.web.unavailable import retry_after_header

_JSON = (b"content-type", b"application/json")
_CODES = {413: "TOO_LARGE", 429: "RATE_LIMITED", 500: "INTERNAL"}


class GraphQLEndpoint:
    def __init__(
        self,
        strawberry_app,
        schema,
        context_factory,
        offloop=None,
        rates=None,
        max_plans: int = 512,
        inline_cost: int = 500,
    ):
        self.app = strawberry_app
        self.compiler = Compiler(schema)
        self.limits = schema.limits
        self.context_factory = context_factory
        self.offloop = offloop
        self.rates = rates
        self.plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self.max_plans = max_plans
        self.inline_cost = inline_cost
        self.fast = 0  # requests answered by a plan (tests and benchmarks look)
        self.inline = 0  # of which on the event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _coded(send)
        body = None
        if scope["method"] == "GET":
            params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if "query" not in params:  # GraphiQL in a browser
                return await self.app(scope, receive, send)
            query, name = params["query"][0], (params.get("operationName") or [None])[0]
            try:
                variables = orjson.loads(params["variables"][0]) if "variables" in params else None
            except orjson.JSONDecodeError:
                return await _error(send, "variables must be a JSON object", "BAD_INPUT", 400)
        elif scope["method"] == "POST":
            if not _is_json(scope):  # no form posts: a browser form cannot forge a mutation
                return await _error(send, "POST /graphql takes application/json", "BAD_INPUT", 415)
            body = await _read(receive)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await _error(send, "the request body is not JSON (or not UTF-8)", "BAD_INPUT", 400)
            if not isinstance(payload, dict):
                return await _error(send, "the request body must be a JSON object with a query", "BAD_INPUT", 400)
            query, variables, name = payload.get("query"), payload.get("variables"), payload.get("operationName")
        else:
            return await self.app(scope, receive, send)
        if not isinstance(query, str) or not query.strip():
            return await _error(send, "the request has no query string", "BAD_INPUT", 400)
        if not (variables is None or isinstance(variables, dict)) or not (name is None or isinstance(name, str)):
            return await _error(send, "variables must be an object and operationName a string", "BAD_INPUT", 400)
        if self.rates is not None:
            wait = await self.rates.query(client_address(scope))
            if wait:
                return await _error(
                    send,
                    f"too many requests from this address: retry in {wait:.1f} s",
                    "RATE_LIMITED",
                    429,
                    retryAfter=round(wait, 1),
                    headers=[(b"retry-after", str(max(1, round(wait))).encode())],
                )
        if has_nul(variables) or has_nul(name):
            return await _error(send, NUL_MESSAGE, "BAD_INPUT", 200)
        key = (query, name)
        plan = self.plans.get(key, False)
        if plan is False:
            plan = await self._call(self._compile, query, name)
            self.plans[key] = plan
            if len(self.plans) > self.max_plans:
                self.plans.popitem(last=False)
        elif plan is not None:
            cost = self.limits.cost(plan.analysis, name, variables)
            extensions = {"cost": {"estimated": cost, "budget": self.limits.budget}} if isinstance(cost, int) else {}
            refusal = self.limits.refusal(cost)
            if refusal is not None:
                return await _respond(send, {"errors": [refusal.formatted], "extensions": extensions})
            try:
                data = (
                    self._inline(plan, scope, variables) if isinstance(cost, int) and cost <= self.inline_cost else None
                )
                if data is None:
                    data = await self._call(plan.run, self.context_factory(scope), variables)
                else:
                    self.inline += 1
            except Fallback as exc:
                if isinstance(exc.__cause__, PoolExhausted):  # strawberry's path would wait for the pool again
                    busy = exc.__cause__
                    error = {"message": str(busy), "extensions": {"code": busy.code, **busy.extensions}}
                    return await _respond(send, {"errors": [error]}, headers=[retry_after_header([error])])
            except RequestTimeout as exc:
                return await _respond(send, {"errors": [{"message": str(exc), "extensions": {"code": "TIMEOUT"}}]})
            else:
                self.fast += 1
                return await _respond(send, {"data": data, "extensions": extensions})
        return await self.app(scope, _replay(body) if body is not None else receive, send)

    def _inline(self, plan: Plan, scope, variables) -> dict | None:
        """The plan's answer computed here on the loop, or None where it needs the database (run it on a thread)."""
        try:
            with no_io():
                return plan.run(self.context_factory(scope), variables)
        except NeedsIO:
            return None

    async def _call(self, fn, *args):
        if self.offloop is None:
            return fn(*args)
        return await self.offloop.call(fn, *args)

    def _compile(self, query: str, name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=MAX_TOKENS)
            analysis = self.limits.analysis(query, document)
            if analysis.errors or analysis.has_nul:
                return None
            plan = self.compiler.compile(document, name)
            plan.analysis = analysis  # type: ignore[attr-defined]
            return plan
        except (NotCompilable, GraphQLError, KeyError, TypeError, ValueError):
            return None


async def _respond(send, payload: dict, status: int = 200, headers=()) -> None:
    out = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(out)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": out})


async def _error(send, message: str, code: str, status: int, headers=(), **extensions) -> None:
    await _respond(
        send, {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}, status, headers
    )


def _coded(send):
    """Strawberry's non-JSON error answers (plain-text 4xx) as JSON errors with a code, same status."""
    held: dict = {}

    async def coded_send(message):
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            ctype = headers.get(b"content-type", b"")
            if message["status"] >= 400 and b"json" not in ctype:
                held["status"] = message["status"]
                held["body"] = b""
                return
        elif message["type"] == "http.response.body" and "status" in held:
            held["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            status = held.pop("status")
            text = held.pop("body").decode("utf-8", "replace").strip() or "bad request"
            code = _CODES.get(status, "BAD_INPUT")
            out = orjson.dumps({"errors": [{"message": text[:500], "extensions": {"code": code}}]})
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [_JSON, (b"content-length", str(len(out)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": out})
            return
        await send(message)

    return coded_send


def _is_json(scope) -> bool:
    for k, v in scope.get("headers") or ():
        if k == b"content-type":
            return v.split(b";")[0].strip().lower() == b"application/json"
    return False


async def _read(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
