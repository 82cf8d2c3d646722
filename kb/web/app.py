"""The ASGI application: GraphQL at /graphql (GraphiQL in a browser), /health, rendered images, and the
pages behind the stable URLs (/ and /n/... for models, layers and neurons, /c/... for claims, /circuits/...), /explore,
/search and the pages' own static files (/static, GraphiQL's vendored build included)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from kb.claims import accounts, sessions
from kb.claims.errors import ClaimProblem
from kb.db.engine import engine_for
from kb.graph.store import ModelGraph
from kb.render.storage import storage_from_settings
from kb.schema import Schema, build_schema
from kb.schema.context import Context
from kb.schema.deadline import DEADLINE, expired
from kb.schema.errors import CodedError
from kb.schema.offloop import OffLoop
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings, get_settings
from kb.web import uploads
from kb.web.annotate import Annotate, annotate_routes
from kb.web.artifacts import ArtifactRoute
from kb.web.auth import auth_routes
from kb.web.auth.current import CurrentSession
from kb.web.auth.pages import AuthPages
from kb.web.body_limit import BodyLimit
from kb.web.check_forms import CheckForms, check_form_routes
from kb.web.circuit_pages import CircuitPages
from kb.web.client_address import ForwardedClient, TrustedProxies
from kb.web.errors import SecuredStarlette, not_found
from kb.web.graphiql import GraphiQL
from kb.web.graphql_endpoint import GraphQLEndpoint
from kb.web.live.routes import Live, live_routes
from kb.web.metrics_route import MetricsRoute, PageTimer
from kb.web.page_query import QueryFailed
from kb.web.pages import Pages, query_failed
from kb.web.ratelimit import RateLimits
from kb.web.render_forms import RenderForms, render_form_routes
from kb.web.request_limit import RequestLimit
from kb.web.templating import STATIC, Static
from kb.web.thumbnails import CardPictures
from kb.web.unavailable import Unavailable, retry_after_header

UPLOAD_PATHS = re.compile(r"/uploads|/n/[^/]+/[^/]+/caricature")  # bodies up to KB_UPLOAD_MAX_BYTES (and a form)
log = logging.getLogger("kb.web")


class GraphQLApp(GraphQL[Context, None]):
    def __init__(
        self,
        schema: Schema,
        engine: sa.Engine,
        graphs: GraphCache,
        settings: Settings,
        rates: RateLimits,
        offloop: OffLoop,
        live: Live,
    ) -> None:
        # Queries may come by GET (cacheable links); mutations only by POST with a JSON body. No stock IDE (it loads
        # from a CDN): kb.web.graphiql serves the vendored one. Subscriptions over WebSocket, graphql-transport-ws
        # only (the protocol of graphql-ws, Apollo and urql; not the legacy subscriptions-transport-ws).
        super().__init__(
            schema,
            graphql_ide=None,
            allow_queries_via_get=True,
            multipart_uploads_enabled=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.engine = engine
        self.graphs = graphs
        self.settings = settings
        self.rates = rates
        self.offloop = offloop
        self.live = live
        self.with_code = schema.with_code  # errors coded with this schema's enums

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        websocket = request.scope["type"] == "websocket"
        return Context(
            engine=self.engine,
            graphs=self.graphs,
            settings=self.settings,
            request=request,
            response=response,
            rates=self.rates,
            offloop=None if websocket else self.offloop,  # a subscription runs on the loop, as long as it is open
            live=self.live if websocket else None,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """connection_init: anonymous (reads are public), or signed in by ``{"authorization": "Bearer ckb_…"}``, or
        by the session cookie of the upgrade request with ``{"csrf": TOKEN}``; a bad token refuses the connection."""
        params = context.connection_params
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConnectionRejectionError({"message": "connection_init's payload must be an object"})
        token = str(params.get("authorization") or params.get("Authorization") or "")
        csrf = params.get("csrf")
        if not token and not csrf:
            return None
        try:
            account = await run_in_threadpool(_ws_account, self.engine, context.request, token, csrf)
        except (CodedError, ClaimProblem) as exc:
            code = exc.code if isinstance(exc, ClaimProblem) else (exc.extensions or {}).get("code")
            raise ConnectionRejectionError({"message": str(exc), "code": code}) from None
        context._account = account
        return {"account": account.name}

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [self.with_code(e) for e in result.errors]
        return process_result(result)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        answers = response_data if isinstance(response_data, list) else [response_data]
        header = retry_after_header([e for a in answers for e in a.get("errors") or () if isinstance(e, dict)])
        if header is not None:  # a full database pool: the client is told when to try again
            response.headers.raw.append(header)
        return response


def create_app(
    settings: Settings | None = None,
    engine: sa.Engine | None = None,
    warm: bool = True,
    after_warm: Callable[[], None] | None = None,
) -> Starlette:
    """The app. ``warm``: its lifespan reads the models' graphs in a thread; ``after_warm`` then runs on the event
    loop (kb serve freezes what start-up made: kb.cli.serve.server_app). Building an app changes nothing of its
    process: two apps in one process (the tests build many) share no settings."""
    settings = settings or get_settings()
    engine = engine or engine_for(settings.db_url)
    _time_limits(engine, settings)
    graphs = ServingGraphs(engine, graphs_dir=settings.graphs_dir)
    schema = build_schema(budget=settings.query_cost_budget)  # this app's own: another app's settings leave it be
    offloop = OffLoop(api_threads(engine, settings), settings.request_timeout_s)
    rates = RateLimits(settings)
    live = Live(engine, graphs, per_address=settings.live_streams_per_address)
    graphql = GraphQLEndpoint(
        GraphQLApp(schema, engine, graphs, settings, rates, offloop, live),
        schema,
        lambda scope: Context(engine=engine, graphs=graphs, settings=settings),
        offloop=offloop,
        inline_cost=settings.inline_cost,
    )

    def database_check() -> list[dict[str, Any]]:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return graphs.model_rows()

    async def health(request: Request) -> JSONResponse:
        try:
            rows = await run_in_threadpool(database_check)  # a slow database must not stall the event loop
        except Exception as exc:
            log.error("health check failed: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "database": "ok",
                "models": sum(r["removed_at"] is None for r in rows),
                "graphs_loaded": graphs.loaded(),
                "graphs": graphs.memory(),
                "process_rss_bytes": _rss_bytes(),
                # requests strawberry answered because the compiled executor failed (each failure logged once)
                "compiled": {
                    "plans": len(graphql.plans),
                    "answered": graphql.fast,
                    "fallbacks": graphql.fallbacks,
                    "failed_documents": graphql.failed_documents,
                },
            }
        )

    artifacts = ArtifactRoute(storage_from_settings(settings, engine))  # the artifact store KB_ARTIFACT_STORE names
    pages = Pages(schema, lambda: Context(engine=engine, graphs=graphs, settings=settings, offloop=offloop))
    auth = AuthPages(engine, settings)

    # the forms write as the signed-in account: the context carries it
    def as_account(account: accounts.Account | None = None) -> Context:
        return Context(engine=engine, graphs=graphs, settings=settings, rates=rates, offloop=offloop, _account=account)

    def for_request(request: Request) -> Context:  # a request's caller, as GraphQL authenticates it (POST /uploads)
        return Context(engine=engine, graphs=graphs, settings=settings, request=request, rates=rates, offloop=offloop)

    annotate = Annotate(auth, pages, schema, as_account)
    pictures = CardPictures(engine, settings, graphs)  # unit cards' thumbnails (kb.web.thumbnails)
    circuit_pages = CircuitPages(schema, as_account, auth, pictures)
    render_forms = RenderForms(auth, pages, schema, as_account)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warm:  # read the models' graphs in a thread: the first requests need not wait for them
            warming = asyncio.get_running_loop().run_in_executor(None, _warm, graphs)
            if (then := after_warm) is not None:
                warming.add_done_callback(lambda _: then())
        elif after_warm is not None:
            after_warm()
        yield
        live.hub.stop()
        offloop.shutdown()

    app = SecuredStarlette(  # the security headers outermost: on every answer, a server error's included
        routes=[
            Route("/", pages.home),
            Route("/health", health),
            Route("/metrics", MetricsRoute(engine, graphs, settings).handle),
            Route("/artifacts/{name}", artifacts.handle),
            Route(uploads.PATH, uploads.UploadRoute(engine, settings, for_request).handle, methods=["POST"]),
            Route("/graphql", GraphiQL(graphql, engine), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),  # subscriptions (graphql-transport-ws)
            *check_form_routes(CheckForms(auth, circuit_pages, schema, as_account)),
            *render_form_routes(render_forms),  # before annotate's /n/{rest:path} posts
            *annotate_routes(annotate),
            Route("/n/{rest:path}", pages.browse),
            Route("/c/{number}", pages.claim),
            Route("/c/{number}/{revision}", pages.claim),
            *auth_routes(auth),
            *live_routes(live),
            Route("/explore", circuit_pages.explore),
            Route("/explore/circuit", circuit_pages.explore_post, methods=["POST"]),
            Route("/circuits", circuit_pages.circuits),
            Route("/circuits/{number}", circuit_pages.circuit),
            Route("/circuits/{number}/edit", circuit_pages.circuit_post, methods=["POST"]),
            Route("/circuits/{number}/{revision}", circuit_pages.circuit),
            Route("/search", pages.search),
            Mount("/static", Static(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={QueryFailed: query_failed},  # a page's query that failed: the message page, by code
    )
    app.state.graphs = graphs
    app.state.graphql = graphql
    app.state.pages = pages
    app.state.live = live
    app.state.pictures = pictures
    app.add_middleware(PageTimer)  # innermost: the matched route is on its scope
    app.add_middleware(CurrentSession, engine=engine)
    app.add_middleware(Unavailable)  # a full pool before or beside GraphQL (the sign-in lookup): 503, Retry-After
    app.add_middleware(RequestLimit, rates=rates)  # outside the session look-up: a refusal reads no database
    app.add_middleware(BodyLimit, max_bytes=1 << 20, larger=(UPLOAD_PATHS, uploads.body_limit(settings)))
    # outermost: the client's address and scheme by KB_TRUSTED_PROXIES, before anything reads them
    app.add_middleware(ForwardedClient, trusted=TrustedProxies(settings.trusted_proxies))
    app.add_exception_handler(404, not_found)
    return app


def _ws_account(engine: sa.Engine, websocket: WebSocket, token: str, csrf: object) -> accounts.Account:
    """The account a WebSocket's connection_init names: a bearer token, else its upgrade request's session cookie
    with that session's CSRF token (UNAUTHENTICATED as for HTTP requests)."""
    scheme, _, secret = token.partition(" ")
    with engine.connect() as conn:
        if scheme.lower() == "bearer" and secret.strip():
            return accounts.authenticate(conn, secret.strip())
        cookie = websocket.cookies.get(sessions.COOKIE)
        if not cookie or not isinstance(csrf, str):
            raise CodedError("sign in with a bearer token, or a session cookie and its CSRF token", "UNAUTHENTICATED")
        return sessions.cookie_account(conn, cookie, csrf)


class ServingGraphs(GraphCache):
    """Reading a model's graph is the server's work, not the request's that happens to need it first: it runs
    outside the request's deadline (and so without its statement_timeout), however long the read takes."""

    def graph(self, model_key: str) -> ModelGraph:
        token = DEADLINE.set(None)
        try:
            return super().graph(model_key)
        finally:
            DEADLINE.reset(token)


def api_threads(engine: sa.Engine, settings: Settings) -> int:
    """The threads that execute requests: KB_API_THREADS, and never more than the engine's pool holds (a thread
    takes one connection at a time). make_engine sizes the pool from the same setting (plus a reserve for the
    work around requests); an engine with a smaller pool lowers the threads to it."""
    size = engine.pool.size() if isinstance(engine.pool, QueuePool) else settings.api_threads
    return max(1, min(settings.api_threads, size))


def _time_limits(engine: sa.Engine, settings: Settings) -> None:
    """Statements run for a request end by its deadline: PostgreSQL's statement_timeout on connections while
    they serve a request (work outside requests, such as reading a model's graph at start-up, keeps none),
    SQLite's progress handler once kb.schema.deadline has passed."""
    if engine.dialect.name == "postgresql":
        ms = max(1, int(settings.statement_timeout_s * 1000))

        def on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:  # psycopg's connection
            wanted = ms if DEADLINE.get() is not None else 0
            if record.info.get("statement_timeout") != wanted:  # a SET only when a connection changes role
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True
                with dbapi_conn.cursor() as cur:
                    cur.execute(f"SET statement_timeout = {wanted}")
                dbapi_conn.autocommit = autocommit
                record.info["statement_timeout"] = wanted

        sa.event.listen(engine, "checkout", on_checkout)
    elif engine.dialect.name == "sqlite":

        def on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:  # sqlite3's connection
            dbapi_conn.set_progress_handler(lambda: 1 if expired() else 0, 20000)

        sa.event.listen(engine, "connect", on_connect)
        engine.pool.dispose()  # connections opened before this have no handler


def _warm(graphs: GraphCache) -> None:
    try:
        graphs.warm()
    except Exception:
        log.exception("warming the graph cache failed; graphs will load on first use")


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux); mapped graph pages count here but are shared between processes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
