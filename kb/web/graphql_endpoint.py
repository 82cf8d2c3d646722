"""/graphql: strawberry's ASGI view, with compiled plans for POSTed queries it has seen before.

The first time a query document arrives it goes through strawberry (parse, validate, limits, execute) and is
compiled in the background of that request (kb.schema.compiled); later requests with the same document run
its plan and are answered directly. Anything unusual, including every error, takes strawberry's path.
"""

from __future__ import annotations

from collections import OrderedDict

import orjson
from graphql import GraphQLError, parse

from kb.schema.compiled import Compiler, Fallback, NotCompilable, Plan
from kb.schema.limits import MAX_TOKENS

_JSON = (b"content-type", b"application/json")


class GraphQLEndpoint:
    def __init__(self, strawberry_app, schema, context_factory, max_plans: int = 512):
        self.app = strawberry_app
        self.compiler = Compiler(schema)
        self.context_factory = context_factory
        self.plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self.max_plans = max_plans
        self.fast = 0  # requests answered by a plan (tests and benchmarks look)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if not _is_json(scope):  # no form posts: a browser form cannot forge a mutation
            return await _bad_request(send, "POST /graphql takes application/json", status=415)
        body = await _read(receive)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return await _bad_request(send, "the request body is not JSON (or not UTF-8)")
        if not isinstance(payload, dict):
            return await _bad_request(send, "the request body must be a JSON object with a query")
        query, variables, name = payload.get("query"), payload.get("variables"), payload.get("operationName")
        if not isinstance(query, str) or not query.strip():
            return await _bad_request(send, "the request has no query string")
        if not (variables is None or isinstance(variables, dict)) or not (name is None or isinstance(name, str)):
            return await _bad_request(send, "variables must be an object and operationName a string")
        key = (query, name)
        plan = self.plans.get(key, False)
        if plan is False:
            plan = self._compile(query, name)
            self.plans[key] = plan
            if len(self.plans) > self.max_plans:
                self.plans.popitem(last=False)
        elif plan is not None:
            try:
                data = plan.run(self.context_factory(scope), variables)
            except Fallback:
                pass
            else:
                self.fast += 1
                out = orjson.dumps({"data": data})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [_JSON, (b"content-length", str(len(out)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": out})
                return
        return await self.app(scope, _replay(body), send)

    def _compile(self, query: str, name: str | None) -> Plan | None:
        try:
            return self.compiler.compile(parse(query, max_tokens=MAX_TOKENS), name)
        except (NotCompilable, GraphQLError, KeyError, TypeError, ValueError):
            return None


async def _bad_request(send, message: str, status: int = 400) -> None:
    out = orjson.dumps({"errors": [{"message": message, "extensions": {"code": "BAD_INPUT"}}]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


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
