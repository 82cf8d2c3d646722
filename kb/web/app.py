"""The ASGI application: GraphQL at /graphql (GraphiQL in a browser), /health, rendered images, and the
pages behind the stable URLs (/ and /n/... for models, layers and neurons, /c/... for claims, /circuits/...), /explore,
/search and the pages' own static files (/static, GraphiQL's vendored build included)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from kb.claims.ratelimit import TokenBuckets
from kb.db.engine import engine_for
from kb.db.graph_cache import GraphCache
from kb.schema import build_schema
from kb.schema.context import Context
from kb.schema.errors import with_code
from kb.settings import Settings, get_settings
from kb.web.body_limit import BodyLimit
from kb.web.graphiql import GraphiQL
from kb.web.graphql_endpoint import GraphQLEndpoint
from kb.web.pages import Pages
from kb.web.templating import STATIC, Static

log = logging.getLogger("kb.web")


class GraphQLApp(GraphQL):
    def __init__(self, schema, graphs: GraphCache, settings: Settings):
        # Queries may come by GET (cacheable links); mutations only by POST with a JSON body.
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True, multipart_uploads_enabled=False)
        self.graphs = graphs
        self.settings = settings
        self.buckets = TokenBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst)

    async def get_context(self, request, response) -> Context:
        return Context(
            graphs=self.graphs, settings=self.settings, request=request, response=response, buckets=self.buckets
        )

    async def process_result(self, request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [with_code(e) for e in result.errors]
        return process_result(result)


def create_app(settings: Settings | None = None, engine: sa.Engine | None = None, warm: bool = True) -> Starlette:
    settings = settings or get_settings()
    engine = engine or engine_for(settings.db_url)
    graphs = GraphCache(engine)
    schema = build_schema()
    graphql = GraphQLEndpoint(
        GraphQLApp(schema, graphs, settings), schema, lambda scope: Context(graphs=graphs, settings=settings)
    )

    async def health(request: Request) -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            rows = graphs.model_rows()
        except Exception as exc:
            log.error("health check failed: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "database": "ok",
                "models": sum(r["removed_at"] is None for r in rows),
                "graphs_loaded": graphs.loaded(),
            }
        )

    storage_root = settings.artifacts_dir
    pages = Pages(schema, lambda: Context(graphs=graphs, settings=settings))

    async def artifact(request: Request):
        name = request.path_params["name"]
        sha, _, ext = name.partition(".")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or ext != "png":
            return PlainTextResponse("not found", status_code=404)
        path = storage_root / sha[:2] / f"{sha}.png"
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        # content-addressed: the bytes behind this URL never change
        return FileResponse(
            path,
            media_type="image/png",
            headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{sha}"'},
        )

    @asynccontextmanager
    async def lifespan(app):
        if warm:  # read the models' graphs in a thread: the first requests need not wait for them
            asyncio.get_running_loop().run_in_executor(None, _warm, graphs)
        yield

    app = Starlette(
        routes=[
            Route("/", pages.home),
            Route("/health", health),
            Route("/artifacts/{name}", artifact),
            Route("/graphql", GraphiQL(graphql), methods=["GET", "POST"]),
            Route("/n/{rest:path}", pages.browse),
            Route("/c/{number}", pages.claim),
            Route("/c/{number}/{revision}", pages.claim),
            Route("/explore", pages.explore),
            Route("/circuits", pages.circuits),
            Route("/circuits/{number}", pages.circuit),
            Route("/search", pages.search),
            Mount("/static", Static(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.graphs = graphs
    app.state.graphql = graphql
    app.state.pages = pages
    app.add_middleware(BodyLimit, max_bytes=1 << 20)
    app.add_exception_handler(404, lambda r, e: PlainTextResponse("not found", status_code=404))
    return app


def _warm(graphs: GraphCache) -> None:
    try:
        graphs.warm()
    except Exception:
        log.exception("warming the graph cache failed; graphs will load on first use")
