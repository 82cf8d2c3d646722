"""/graphql: strawberry's ASGI view, with compiled plans for queries it has seen before.

Every GraphQL request (GET or POST) is checked for NULs (kb.web.request_limit has counted it). The first time
a query document arrives it is compiled on a worker thread (kb.schema.compiled) and goes through strawberry
(parse, limits, validate, cost, execute off the loop: kb.schema); later requests with the same document have
their cost checked against the budget (cached per document and variable values) and run its plan, answered
directly with the cost in ``extensions``. A plan whose estimated cost is at most ``inline_cost`` (a neighbour
query's is about 50) runs on the event loop under ``io_guard.no_io()``: it reads only the loaded graph and the
catalog, in microseconds, and the moment it would touch the database (a cold model, a stale catalog, a kernel's
link program) it stops with NeedsIO and runs again on a worker thread. Larger plans go to the thread pool.
Anything unusual, including every error but an unknown key in a root field, takes strawberry's path.

The compiled executor calls the resolvers itself, so it must not be able to take the API down: any exception
while compiling a document (a resolver it reads wrongly, a bug of its own) leaves that document to strawberry, is
logged once and remembered (not retried on each request), and every request strawberry then answers in its
place counts as a fallback, as does every plan run that failed on an exception it did not expect (logged once
per plan); /health shows the counts. Whatever strawberry answers that is not JSON (a 4xx in plain text) becomes
a JSON error with a code.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from graphql import GraphQLError, GraphQLFormattedError, parse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kb import metrics
from kb.db.engine import PoolExhausted
from kb.db.io_guard import NeedsIO, no_io
from kb.schema import Schema, operation_type
from kb.schema.compiled import Broken, Compiler, Fallback, NotCompilable, Plan
from kb.schema.context import Context
from kb.schema.errors import RequestTimeout
from kb.schema.limits import MAX_TOKENS, NUL_MESSAGE, Analysis, has_nul
from kb.schema.offloop import OffLoop
from kb.web.unavailable import retry_after_header

log = logging.getLogger("kb.api")
_JSON = (b"content-type", b"application/json")
_CODES = {413: "TOO_LARGE", 429: "RATE_LIMITED", 500: "INTERNAL"}
_BROKEN = object()  # in the plan cache: compiling this document failed (strawberry answers it)
T = TypeVar("T")
Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class Compiled:
    """A document's plan and its analysis (what its cost is computed from, per request's variables)."""

    plan: Plan
    analysis: Analysis


class GraphQLEndpoint:
    def __init__(
        self,
        strawberry_app: ASGIApp,
        schema: Schema,
        context_factory: Callable[[Scope], Context],
        offloop: OffLoop | None = None,
        max_plans: int = 512,
        inline_cost: int = 500,
    ) -> None:
        self.app = strawberry_app
        self.compiler = Compiler(schema)
        self.limits = schema.limits
        self.context_factory = context_factory
        self.offloop = offloop
        # a document's plan (Compiled); None: not compilable (strawberry answers it); _BROKEN: its compilation failed
        self.plans: OrderedDict[tuple[str, str | None], Compiled | object | None] = OrderedDict()
        self.max_plans = max_plans
        self.inline_cost = inline_cost
        self.fast = 0  # requests answered by a plan (tests and benchmarks look)
        self.inline = 0  # of which on the event loop
        self.fallbacks = 0  # requests strawberry answered because the compiled executor failed (/health shows it)
        self.failed_documents = 0  # documents whose compilation failed (each logged once)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request answered (``_answer``), counted by operation type and outcome and timed (kb.metrics):
        the outcome is "ok" or the first error's code, read from the answer as it is sent."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        outcome = _Outcome(send)
        started = time.perf_counter()
        try:
            await self._answer(scope, receive, outcome.send)
        finally:
            operation = scope.get("kb.operation") or ("unknown" if outcome.first or outcome.status >= 400 else None)
            if operation is not None:  # None: GraphiQL's page
                metrics.GRAPHQL_SECONDS.labels(operation).observe(time.perf_counter() - started)
                metrics.GRAPHQL_REQUESTS.labels(operation, outcome.code()).inc()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                return await send_error(send, "variables must be a JSON object", "BAD_INPUT", 400)
        elif scope["method"] == "POST":
            if not _is_json(scope):  # no form posts: a browser form cannot forge a mutation
                return await send_error(send, "POST /graphql takes application/json", "BAD_INPUT", 415)
            body = await _read(receive)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await send_error(send, "the request body is not JSON (or not UTF-8)", "BAD_INPUT", 400)
            if not isinstance(payload, dict):
                return await send_error(send, "the request body must be a JSON object with a query", "BAD_INPUT", 400)
            query, variables, name = payload.get("query"), payload.get("variables"), payload.get("operationName")
        else:
            return await self.app(scope, receive, send)
        scope["kb.operation"] = (
            operation_type(query, name if isinstance(name, str) else None) if isinstance(query, str) else "unknown"
        )
        if not isinstance(query, str) or not query.strip():
            return await send_error(send, "the request has no query string", "BAD_INPUT", 400)
        if not (variables is None or isinstance(variables, dict)) or not (name is None or isinstance(name, str)):
            return await send_error(send, "variables must be an object and operationName a string", "BAD_INPUT", 400)
        if has_nul(variables) or has_nul(name):
            return await send_error(send, NUL_MESSAGE, "BAD_INPUT", 200)
        key = (query, name)
        compiled = self.plans.get(key, False)
        if compiled is False:
            compiled = await self._call(self._compile, query, name)
            self.plans[key] = compiled
            if len(self.plans) > self.max_plans:
                self.plans.popitem(last=False)
            if compiled is _BROKEN:
                self._fell_back()
        elif compiled is _BROKEN:
            self._fell_back()
        elif isinstance(compiled, Compiled):
            plan = compiled.plan
            cost = self.limits.cost(compiled.analysis, name, variables)
            extensions = {"cost": {"estimated": cost, "budget": self.limits.budget}} if isinstance(cost, int) else {}
            refusal = self.limits.refusal(cost)
            if refusal is not None:
                return await _respond(send, {"errors": [refusal.formatted], "extensions": extensions})
            try:
                inline = (
                    self._inline(plan, scope, variables) if isinstance(cost, int) and cost <= self.inline_cost else None
                )
                if inline is None:
                    answer = await self._call(plan.run, self.context_factory(scope), variables)
                else:
                    answer = inline
                    self.inline += 1
                    metrics.COMPILED.labels("inline").inc()
            except Broken as exc:
                self._broken(plan, query, exc)
            except Fallback as exc:
                if isinstance(exc.__cause__, PoolExhausted):  # strawberry's path would wait for the pool again
                    busy = exc.__cause__
                    error = {"message": str(busy), "extensions": {"code": busy.code, **busy.extensions}}
                    header = retry_after_header([error])  # UNAVAILABLE: always one
                    return await _respond(send, {"errors": [error]}, headers=[header] if header else [])
            except RequestTimeout as exc:
                return await _respond(send, {"errors": [{"message": str(exc), "extensions": {"code": "TIMEOUT"}}]})
            else:
                self.fast += 1
                metrics.COMPILED.labels("answered").inc()
                data, errors = answer
                payload = {"data": data, "errors": errors} if errors else {"data": data}
                return await _respond(send, {**payload, "extensions": extensions})
        return await self.app(scope, _replay(body) if body is not None else receive, send)

    def _fell_back(self) -> None:
        self.fallbacks += 1
        metrics.COMPILED.labels("fallback").inc()

    def _broken(self, plan: Plan, query: str, exc: Broken) -> None:
        self._fell_back()
        plan.failures += 1
        if plan.failures == 1:
            log.warning(
                "the compiled plan of a query failed; strawberry answers it (logged once per plan): %s",
                _short(query),
                exc_info=exc.__cause__,
            )

    def _inline(
        self, plan: Plan, scope: Scope, variables: dict[str, Any] | None
    ) -> tuple[dict[str, Any] | None, list[GraphQLFormattedError]] | None:
        """The plan's answer computed here on the loop, or None where it needs the database (run it on a thread)."""
        try:
            with no_io():
                return plan.run(self.context_factory(scope), variables)
        except NeedsIO:
            return None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.offloop is None:
            return fn(*args)
        answer: T = await self.offloop.call(fn, *args)
        return answer

    def _compile(self, query: str, name: str | None) -> Compiled | object | None:
        """The document's plan; None where the compiler does not take it; _BROKEN where compiling it failed on
        anything else (logged here, once: the endpoint remembers the answer)."""
        try:
            document = parse(query, max_tokens=MAX_TOKENS)
            analysis = self.limits.analysis(query, document)
            if analysis.errors or analysis.has_nul:
                return None
        except (GraphQLError, KeyError, TypeError, ValueError):  # strawberry reports what is wrong with it
            return None
        try:
            plan = self.compiler.compile(document, name)
        except (NotCompilable, GraphQLError):
            return None
        except Exception:  # a bug of the compiler's: never an outage
            self.failed_documents += 1
            log.warning("compiling a query failed; strawberry answers it: %s", _short(query), exc_info=True)
            return _BROKEN
        return Compiled(plan, analysis)


_FIRST_CODE = re.compile(rb'"errors"\s*:\s*\[.*?"code"\s*:\s*"([A-Za-z_]{1,40})"', re.S)


class _Outcome:
    """What a GraphQL answer said, read as it is sent: its status and its first error's code."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 200
        self.first: str | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and self.first is None:
            body = message.get("body", b"")
            if b'"errors"' in body and (m := _FIRST_CODE.search(body)):
                self.first = m.group(1).decode()
        await self._send(message)

    def code(self) -> str:
        if self.first:
            return self.first
        return "ok" if self.status < 400 else f"HTTP_{self.status}"


def _short(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= 200 else text[:200] + "..."


async def _respond(send: Send, payload: dict[str, Any], status: int = 200, headers: Iterable[Header] = ()) -> None:
    out = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(out)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": out})


async def send_error(
    send: Send, message: str, code: str, status: int, headers: Iterable[Header] = (), **extensions: Any
) -> None:
    await _respond(
        send, {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}, status, headers
    )


def _coded(send: Send) -> Send:
    """Strawberry's non-JSON error answers (plain-text 4xx) as JSON errors with a code, same status."""
    held: dict[str, Any] = {}

    async def coded_send(message: Message) -> None:
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


def _is_json(scope: Scope) -> bool:
    for k, v in scope.get("headers") or ():
        if k == b"content-type":
            return bool(v.split(b";")[0].strip().lower() == b"application/json")
    return False


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
