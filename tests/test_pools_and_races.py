"""Pools sized to the API threads, a full pool as UNAVAILABLE with a Retry-After hint, and the shared state that
request threads touch at once: the kernel cache, the catalog, compiled plans' arguments."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import pytest
import sqlalchemy as sa
import strawberry
from conftest import sql_statements
from graphql import parse
from starlette.testclient import TestClient

from kb.app.model_import import import_model
from kb.claims import sessions
from kb.db.engine import POOL_RESERVE, PoolExhausted, make_engine
from kb.schema.compiled import Compiler, NotCompilable
from kb.schema.fields import field
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings
from kb.web.app import api_threads, create_app

THREADS = 16


@pytest.fixture(scope="module")
def tiny_model(engine, tiny_arch):
    import_model(engine, "test:tiny", key="tiny-race", weights="random")
    return "tiny-race"


@contextmanager
def switching_often():
    """Threads switch every microsecond (instead of every 5 ms): check-then-act races show within a few
    hundred iterations instead of hiding behind the interpreter's time slice."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def hammer(work, threads: int = THREADS) -> list[BaseException]:
    """work(i) on `threads` threads released together; the exceptions they raised."""
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # collected: the test reports them
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "a thread is stuck"
    return failures


# -- pools ---------------------------------------------------------------------------------------------------


def test_the_pool_is_sized_from_the_api_threads(db_url):
    settings = Settings(database_url=db_url, api_threads=6, db_pool_timeout_s=60, request_timeout_s=30)
    engine = make_engine(db_url, settings)
    try:
        assert engine.pool.size() == 6 and engine.pool.timeout() == 15  # at most half the request's limit
        assert api_threads(engine, settings) == 6
        # an engine with a smaller pool than the setting asks lowers the threads to it
        assert api_threads(engine, Settings(database_url=db_url, api_threads=32)) == 6
    finally:
        engine.dispose()


@pytest.fixture
def small_pool(db_url, engine):
    """An app on an engine of its own whose pool holds 2 + POOL_RESERVE connections and waits 0.2 s for one."""
    settings = Settings(database_url=db_url, api_threads=2, db_pool_timeout_s=0.2, query_rate_limit="")
    small = make_engine(db_url, settings)
    app = create_app(settings, engine=small, warm=False)
    with TestClient(app) as client:
        yield small, client
    small.dispose()


@contextmanager
def every_connection_held(engine):
    """Holds connections until the pool refuses one: that refusal is UNAVAILABLE with a retry hint."""
    held = []
    try:
        with pytest.raises(PoolExhausted) as refused:
            for _ in range(4 * (2 + POOL_RESERVE)):
                held.append(engine.connect())
        assert len(held) == 2 + POOL_RESERVE
        assert refused.value.code == "UNAVAILABLE" and refused.value.extensions == {"retryAfter": 1}
        yield
    finally:
        for conn in held:
            conn.close()


MODELS = "{ models { key } }"


def test_a_full_pool_answers_unavailable_with_retry_after(small_pool, tiny_model):
    engine, client = small_pool
    with every_connection_held(engine):
        # the first request goes through strawberry (its plan is compiled), the second runs the compiled plan
        for path in ("strawberry", "compiled plan"):
            response = client.post("/graphql", json={"query": MODELS})
            error = response.json()["errors"][0]
            assert error["extensions"] == {"code": "UNAVAILABLE", "retryAfter": 1}, (path, response.text)
            assert "busy" in error["message"] and response.headers["retry-after"] == "1", path
        # a page's sign-in lookup (a cookie) waits for the pool before any GraphQL: 503, not a bare 500
        client.cookies.set(sessions.COOKIE, "any-secret")
        page = client.get("/")
        assert page.status_code == 503 and page.headers["retry-after"] == "1", page.text
        client.cookies.clear()
        page = client.get("/")  # the page's own query: its error page says the same
        assert page.status_code == 503 and page.headers["retry-after"] == "1", page.text
    # connections back: the same requests answer
    response = client.post("/graphql", json={"query": MODELS})
    assert {"key": tiny_model} in response.json()["data"]["models"] and "retry-after" not in response.headers


# -- races ---------------------------------------------------------------------------------------------------


def test_kernel_cache_under_threads(engine, tiny_model):
    """16 threads share a kernel cache of one entry: every lookup races an eviction by another thread. Before
    the lock, a hit could lose its entry between get() and move_to_end() (KeyError)."""
    reference = GraphCache(engine)
    g = reference.graph(tiny_model)
    pairs = [
        (s, t)
        for target in g.layers[1:]
        for t in range(target.first, target.first + target.units)
        for s in range(
            g.layers[target.position - 1].first,
            g.layers[target.position - 1].first + g.layers[target.position - 1].units,
        )
    ]
    expected = {pair: reference.kernel(g, *pair) for pair in pairs}
    cache = GraphCache(engine, kernel_cache=1)
    cache.graph(tiny_model)
    wrong: list[tuple[int, int]] = []

    def work(i: int) -> None:
        for n in range(1000):
            pair = pairs[(i + n) % len(pairs)]
            if not np.array_equal(cache.kernel(g, *pair), expected[pair]):
                wrong.append(pair)

    with switching_often():
        failures = hammer(work)
    assert failures == [] and wrong == []
    assert len(cache._kernels) == 1


def test_a_lookup_and_an_eviction_at_the_same_moment(engine, tiny_model):
    """The race above, made to happen every time: thread A's lookup finds its kernel, and before A moves it to
    the end, thread B adds another kernel and evicts A's (a cache of one). With the lock B cannot: it waits."""

    class Interleaved(OrderedDict):
        looking = threading.Event()
        evicted = threading.Event()

        def get(self, key, default=None):
            value = super().get(key, default)
            if value is not None and threading.current_thread().name == "A":
                self.looking.set()
                self.evicted.wait(timeout=2)  # B's eviction, where it can come now (with the lock it cannot)
            return value

        def popitem(self, last=True):
            item = super().popitem(last)
            self.evicted.set()
            return item

    cache = GraphCache(engine, kernel_cache=1)
    g = cache.graph(tiny_model)
    mine, other = (g.layers[0].first, g.layers[1].first), (g.layers[1].first, g.layers[2].first)
    expected = {pair: GraphCache(engine).kernel(g, *pair) for pair in (mine, other)}
    cache._kernels = Interleaved()
    cache.kernel(g, *mine)  # cached: A's lookup finds it
    got: dict[str, np.ndarray | BaseException] = {}

    def lookup(name: str, pair: tuple[int, int]) -> None:
        try:
            got[name] = cache.kernel(g, *pair)
        except BaseException as exc:  # collected: the test reports them
            got[name] = exc

    a = threading.Thread(target=lookup, args=("A", mine), name="A")
    a.start()
    assert Interleaved.looking.wait(timeout=30)
    b = threading.Thread(target=lookup, args=("B", other), name="B")
    b.start()
    a.join(timeout=30)
    b.join(timeout=30)
    assert not isinstance(got["A"], BaseException), got["A"]
    assert np.array_equal(got["A"], expected[mine]) and np.array_equal(got["B"], expected[other])
    assert list(cache._kernels) == [(tiny_model, other[1])]


def test_catalog_under_threads(engine, tiny_model):
    """16 threads start on a cold catalog, then read, resolve and refresh it. At the start, the first read is held
    until every thread has asked: one read serves them all (before the lock, each thread that found no catalog
    read it itself, a connection each), and every answer is the same throughout."""
    cache = GraphCache(engine, catalog_ttl=3600)
    asked = threading.Condition()
    arrivals: list[int] = []
    held: list[str] = []

    def ask(i: int) -> None:
        with asked:
            arrivals.append(i)
            asked.notify_all()
        cache.catalog()

    def hold_the_first_read(conn, cursor, statement, *args):
        if "FROM layer" in statement and not held:
            held.append(statement)
            with asked:  # every thread has called catalog() (bounded: the test fails below if not)
                asked.wait_for(lambda: len(arrivals) == THREADS, timeout=30)

    sa.event.listen(engine, "before_cursor_execute", hold_the_first_read)
    try:
        with sql_statements(engine) as seen:
            failures = hammer(ask)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold_the_first_read)
    assert failures == [] and len(arrivals) == THREADS
    assert sum("FROM layer" in s for s in seen) == 1

    key = f"{tiny_model}/c2:1"
    answers: list[tuple] = []

    def work(i: int) -> None:
        for n in range(40):
            if (i + n) % 8 == 0:
                cache.catalog(refresh=True)
            row = cache.model_row(tiny_model)
            answers.append(
                (str(cache.resolve(key)), row["key"], row["removed_at"], cache.catalog().model(tiny_model).key)
            )

    with switching_often():
        failures = hammer(work)
    assert failures == []
    assert set(answers) == {(key, tiny_model, None, tiny_model)} and len(answers) == THREADS * 40


def test_a_refresh_asked_for_sees_what_committed_before_it(engine, tiny_arch, tiny_model):
    """Threads that find a key missing ask for a refresh together: they may share one read, but never one that
    began before they asked (a model imported just before is found by every one of them)."""
    cache = GraphCache(engine, catalog_ttl=3600)
    cache.catalog()
    import_model(engine, "test:tiny", key="tiny-late", weights="random")
    found: list[str] = []
    with switching_often():
        failures = hammer(lambda i: found.append(str(cache.resolve("tiny-late/mixed:1"))))
    assert failures == [] and found == ["tiny-late/mixed:1"] * THREADS


# -- compiled plans' arguments -------------------------------------------------------------------------------


@strawberry.input
class Names:
    names: list[str]


@strawberry.type
class Query:
    @field()
    def tags(self, names: list[str]) -> list[str]:
        names.append("seen")  # a resolver that changes the list it was given
        return names

    @field()
    def labels(self, of: Names) -> list[str]:
        of.names.append("seen")  # ... or a list inside an input object
        return of.names


def test_a_plan_gives_each_request_its_own_arguments():
    compiler = Compiler(strawberry.Schema(query=Query), types={"Query": Query})
    plan = compiler.compile(parse('{ tags(names: ["a", "b"]) }'), None)
    assert [plan.run(None, {}) for _ in range(3)] == [({"tags": ["a", "b", "seen"]}, [])] * 3  # (data, errors)
    with pytest.raises(NotCompilable):  # an input object's argument: strawberry converts it, and runs the query
        compiler.compile(parse('{ labels(of: { names: ["a"] }) }'), None)
