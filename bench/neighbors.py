"""Neighbor-query throughput and latency: Circuit KB's GraphQL server against PostGraphile v4.

Both servers answer the same question on the same PostgreSQL database: "the top 10 inputs of a neuron, given
its key, by weight descending, with weight, magnitude and the source neuron's key". The script

1. creates a throwaway database (kb_bench_nb_<hex>), applies our schema and imports torchvision:googlenet with
   random weights (5808 units, ~3.2M edges);
2. adds, in that database only, what PostGraphile needs to answer the question idiomatically: a root function
   ``neuron_by_key(text)``, a computed column ``neuron_key(neuron)`` and smart comments that declare the
   (FK-less, partitioned) ``connection`` table's relations to ``neuron`` (see POSTGRAPHILE_SQL);
3. installs ``postgraphile@4`` with npm into a temporary folder (or uses ~/.cache/kb-bench/postgraphile when it
   holds an install: ``npm install --prefix ~/.cache/kb-bench/postgraphile postgraphile@4`` once to skip it);
4. starts ``kb serve`` and PostGraphile (one process each, on free localhost ports), waits until both answer
   (ours loads the graph into memory in the background first) and checks that both return 10 inputs, with the
   same first one, for the same key;
5. loads each with wrk (a Lua script cycles through every neuron that has inputs, in a seeded random order,
   the same for both), a 3 s warm-up then the measured run, and prints req/s, p50 and p99 latency and ratios;
6. stops both servers, removes the npm folder (never the cache) and drops the database, also on failure.

Run from the repository root (needs PostgreSQL, node/npm and wrk; ~2-3 minutes):

    .venv/bin/python bench/neighbors.py [--duration 15] [--connections 16]

With ``--database URL`` it uses an existing database instead (nothing imported or dropped; PostGraphile's
functions are added to it), e.g. one holding every zoo model, and queries the units of ``--model`` only
(default googlenet), so that its figures compare with a database holding that model alone.

KB_BENCH_PG_URL overrides the admin connection (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

PG_ADMIN = os.environ.get("KB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SOURCE = "torchvision:googlenet"
SEED = 0
NPM_CACHE = Path.home() / ".cache" / "kb-bench" / "postgraphile"
KB_BIN = Path(sys.executable).with_name("kb")  # the venv's console script; else the one on PATH

OUR_QUERY = (
    "query Neighbors($key: String!) { neuron(key: $key) { key inputs(first: 10, orderBy: WEIGHT) "
    "{ edges { weight magnitude node { key } } } } }"
)
PG_QUERY = (
    "query Neighbors($key: String!) { neuronByKey(key: $key) { key inputs(first: 10, orderBy: WEIGHT_DESC) "
    "{ nodes { weight magnitude source { key } } } } }"
)

# PostGraphile v4 hides partitioned parents and exposes each partition (connection_m1 -> allConnectionM1S)
# unless started with --use-partitioned-parent; with it, `connection` is exposed and its smart comments apply.
# The parent has no constraints of its own, so the comment declares (target_id, source_id) a primary key (PostGraphile
# then appends it to ORDER BY as a deterministic tie-break, as ours breaks ties) and the two relations; the
# `|@fieldName` / `|@foreignFieldName` parts name Connection.target/.source and Neuron.inputs/.outputs.
POSTGRAPHILE_SQL = [
    """CREATE OR REPLACE FUNCTION neuron_by_key(key text) RETURNS neuron AS $$
         SELECT n.* FROM neuron n
         JOIN layer l ON l.id = n.layer_id
         JOIN model m ON m.id = n.model_id
         WHERE m.key = split_part($1, '/', 1)
           AND l.key = split_part(split_part($1, '/', 2), ':', 1)
           AND n."index" = split_part($1, ':', 2)::int
       $$ LANGUAGE sql STABLE""",
    """CREATE OR REPLACE FUNCTION neuron_key(n neuron) RETURNS text AS $$
         SELECT m.key || '/' || l.key || ':' || n."index"
         FROM layer l JOIN model m ON m.id = l.model_id
         WHERE l.id = n.layer_id
       $$ LANGUAGE sql STABLE""",
    # Our partitions carry only a BRIN on target_id (the database is read by ranges of targets; our server's
    # neighbours come from graph files). PostGraphile looks a unit's inputs up by target_id, so it gets the B-tree
    # it would have in a deployment of its own, on every partition: the primary key's columns before 2026-12-02.
    "CREATE INDEX IF NOT EXISTS connection_target_source ON connection (target_id, source_id)",
    r"""COMMENT ON TABLE connection IS E'@primaryKey target_id,source_id\n"""
    r"""@foreignKey (target_id) references neuron (id)|@fieldName target|@foreignFieldName inputs\n"""
    r"""@foreignKey (source_id) references neuron (id)|@fieldName source|@foreignFieldName outputs'""",
]
POSTGRAPHILE_FLAGS = ["--disable-query-log", "--disable-graphiql", "--use-partitioned-parent"]

LUA = """\
local bodies = {
%s
}
local requests = {}
local i = 0
bad = 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  for k, body in ipairs(bodies) do
    requests[k] = wrk.format("POST", "/graphql", {["Content-Type"] = "application/json"}, body)
  end
end

function request()
  i = i %% #requests + 1
  return requests[i]
end

-- a 200 that carries GraphQL errors or a null neuron is a failure too
function response(status, headers, body)
  if status ~= 200 or body:find('"errors"', 1, true) or body:find('null', 1, true) then bad = bad + 1 end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("Bad responses: %%d\\n", n))
end
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- database --------------------------------------------------------------------------------------------------


def create_database(admin: sa.Engine) -> tuple[str, str]:
    name = f"kb_bench_nb_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    return name, url


def drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def import_graph(url: str) -> None:
    from kb.app.model_import import import_model
    from kb.db import migrate
    from kb.db.engine import make_engine

    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        report = import_model(engine, SOURCE, weights="random", seed=SEED)
        log(f"imported {SOURCE}: {report.units} units, {report.edges} edges in {report.seconds['total']:.1f} s")
    finally:
        engine.dispose()


def prepare_postgraphile(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        for sql in POSTGRAPHILE_SQL:
            conn.exec_driver_sql(sql)
        conn.exec_driver_sql("VACUUM (ANALYZE)")  # the state a live database is in after autovacuum


def neuron_keys(engine: sa.Engine, model: str) -> list[str]:
    """Every neuron of a layer of ``model`` that has inputs (all but the first), in a seeded random order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("""
            SELECT m.key, l.key, n."index" FROM neuron n
            JOIN layer l ON l.id = n.layer_id JOIN model m ON m.id = n.model_id
            WHERE m.key = :model AND l.id IN (SELECT l2.id FROM layer l2 WHERE EXISTS (
                SELECT 1 FROM neuron t JOIN connection c ON c.target_id = t.id WHERE t.layer_id = l2.id))
            ORDER BY l.position, n."index"
        """),
            {"model": model},
        ).all()
    keys = [f"{model}/{layer}:{index}" for model, layer, index in rows]
    random.Random(SEED).shuffle(keys)
    return keys


# --- processes ---------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str  # the GraphQL endpoint
    query: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name: str, cmd: list[str], env: dict, workdir: Path, query: str, port: int) -> Server:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, f"http://127.0.0.1:{port}/graphql", query, proc, log_path)


def stop(server: Server) -> None:
    if server.proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_until(server: Server, ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n{server.log_tail()}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{server.name}: no {what} after {timeout:.0f} s:\n{server.log_tail()}")


def ask(server: Server, key: str, timeout: float = 10) -> dict:
    r = httpx.post(server.url, json={"query": server.query, "variables": {"key": key}}, timeout=timeout)
    r.raise_for_status()
    return r.json()


def neighbor_keys(server: Server, key: str, timeout: float = 10) -> list[str]:
    """The keys of the neuron's top inputs, as the server returned them (raises on errors or a null neuron)."""
    body = ask(server, key, timeout)
    if body.get("errors") or not body.get("data"):
        raise RuntimeError(f"{server.name}: {body}")
    if server.name == "circuit-kb":
        return [e["node"]["key"] for e in body["data"]["neuron"]["inputs"]["edges"]]
    return [n["source"]["key"] for n in body["data"]["neuronByKey"]["inputs"]["nodes"]]


def answers(server: Server, key: str, timeout: float = 10) -> bool:
    try:
        return len(neighbor_keys(server, key, timeout)) > 0
    except (RuntimeError, KeyError, TypeError):
        return False


def spawn_ours(url: str, workdir: Path) -> Server:
    port = free_port()
    kb = str(KB_BIN) if KB_BIN.exists() else shutil.which("kb") or sys.exit("kb is not installed")
    return spawn(
        "circuit-kb",
        [kb, "serve", "--host", "127.0.0.1", "--port", str(port)],
        # one load generator is one client address: lift the per-address limit (the limiter still counts)
        {"KB_DATABASE_URL": url, "KB_QUERY_RATE_LIMIT": "100000000/minute"},
        workdir,
        OUR_QUERY,
        port,
    )


def wait_ours(server: Server, key: str) -> None:
    def healthy() -> bool:
        r = httpx.get(server.url.replace("/graphql", "/health"), timeout=5)
        h = r.json() if r.status_code == 200 else {}
        return h.get("models", 0) >= 1 and h.get("graphs_loaded", h["models"]) == h["models"]  # all warm

    wait_until(server, healthy, 900, "healthy /health with every graph loaded")
    # the graph loads in the background; a query waits for it, so poll until one returns data
    wait_until(server, lambda: answers(server, key, timeout=120), 180, "answer (graph cache warm)")


def install_postgraphile(workdir: Path) -> Path:
    """The folder holding node_modules/.bin/postgraphile: the cache when it has one, else a fresh install."""
    if (NPM_CACHE / "node_modules" / ".bin" / "postgraphile").exists():
        log(f"using the PostGraphile install cached in {NPM_CACHE}")
        return NPM_CACHE
    prefix = workdir / "npm"
    prefix.mkdir()
    log("npm install postgraphile@4 ...")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(prefix), "postgraphile@4"],
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    return prefix


def postgraphile_version(prefix: Path) -> str:
    pkg = prefix / "node_modules" / "postgraphile" / "package.json"
    return json.loads(pkg.read_text())["version"]


def spawn_postgraphile(prefix: Path, url: str, workdir: Path) -> Server:
    port = free_port()
    pg_url = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    cmd = [
        str(prefix / "node_modules" / ".bin" / "postgraphile"),
        "-c",
        pg_url,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *POSTGRAPHILE_FLAGS,
    ]
    return spawn("postgraphile", cmd, {"NODE_ENV": "production"}, workdir, PG_QUERY, port)


# --- checks and load ---------------------------------------------------------------------------------------------


def check_same_answer(ours: Server, theirs: Server, key: str) -> None:
    a, b = neighbor_keys(ours, key), neighbor_keys(theirs, key)
    assert len(a) == len(b) == 10, f"{key}: {len(a)} vs {len(b)} edges"
    assert a[0] == b[0], f"{key}: first input {a[0]} vs {b[0]}"
    log(f"both servers: 10 inputs of {key}, first {a[0]}" + ("" if a == b else " (orders differ further on)"))


def lua_script(path: Path, query: str, keys: list[str]) -> Path:
    bodies = (json.dumps({"query": query, "variables": {"key": k}}, separators=(",", ":")) for k in keys)
    path.write_text(LUA % ",\n".join(f"  [==[{b}]==]" for b in bodies))
    return path


def run_wrk(server: Server, script: Path, seconds: int, connections: int) -> str:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        server.url.removesuffix("/graphql"),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.name} died under load:\n{server.log_tail()}")
    return out


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class Result:
    rps: float
    p50: float
    p99: float
    problems: list[str]


def parse_wrk(out: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        value, unit = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M).groups()
        return float(value) * UNITS_MS[unit]

    problems = [m.group(0).strip() for m in re.finditer(r"^\s*(Non-2xx or 3xx responses|Socket errors):.*$", out, re.M)]
    bad = re.search(r"Bad responses: (\d+)", out)
    if bad and int(bad.group(1)):
        problems.append(bad.group(0))
    return Result(rps, pct("50"), pct("99"), problems)


def load(server: Server, script: Path, args) -> Result:
    log(f"{server.name}: warm-up 3 s, then {args.duration} s with {args.connections} connections")
    run_wrk(server, script, 3, args.connections)
    result = parse_wrk(run_wrk(server, script, args.duration, args.connections))
    for problem in result.problems:
        print(f"WARNING {server.name}: {problem}")
    return result


def report(results: dict[str, Result], args, version: str, keys: int) -> None:
    print(f"{'server':<13} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        print(f"{name:<13} {r.rps:>9.1f} {r.p50:>8.2f} {r.p99:>8.2f}")
    ours, theirs = results["circuit-kb"], results["postgraphile"]
    print(
        f"ratio (circuit-kb / postgraphile): {ours.rps / theirs.rps:.2f}x req/s; "
        f"p50 {ours.p50:.2f} ms vs {theirs.p50:.2f} ms; p99 {ours.p99:.2f} ms vs {theirs.p99:.2f} ms"
    )
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s --latency (3 s warm-up each), {keys} neuron keys "
        f"cycled in seeded random order; {os.cpu_count()} CPUs; servers and wrk share the machine"
    )
    print(
        f"circuit-kb: kb serve (uvicorn, 1 process); PostGraphile {version}: NODE_ENV=production, 1 process, "
        f"flags {' '.join(POSTGRAPHILE_FLAGS)}"
    )


# --- main --------------------------------------------------------------------------------------------------------


def bench(args, admin: sa.Engine, workdir: Path) -> None:
    name, url = create_database(admin) if not args.database else (None, args.database)
    servers: list[Server] = []
    try:
        if name:
            log(f"database {name}: importing {SOURCE} ...")
            import_graph(url)
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            prepare_postgraphile(engine)
            keys = neuron_keys(engine, args.model)
            with engine.connect() as conn:
                models = conn.exec_driver_sql("SELECT count(*) FROM model WHERE removed_at IS NULL").scalar_one()
                edges = conn.execute(
                    sa.text("SELECT sum(reltuples) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'connection_m%'")
                )
                edges = int(edges.scalar_one() or 0)
        finally:
            engine.dispose()
        print(f"database: {models} models, about {edges:,} connections; queries on {args.model}'s units")
        prefix = install_postgraphile(workdir)
        version = postgraphile_version(prefix)
        log("starting both servers ...")
        servers.append(spawn_ours(url, workdir))
        servers.append(spawn_postgraphile(prefix, url, workdir))
        wait_ours(servers[0], keys[0])
        wait_until(servers[1], lambda: answers(servers[1], keys[0]), 120, "answer")
        check_same_answer(*servers, keys[0])
        results = {s.name: load(s, lua_script(workdir / f"{s.name}.lua", s.query, keys), args) for s in servers}
    finally:
        while servers:
            stop(servers.pop())
        if name:
            drop_database(admin, name)
    report(results, args, version, len(keys))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=15, help="seconds of measured load per server")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--database", help="an existing database to use (not dropped), e.g. with every zoo model")
    ap.add_argument("--model", default="googlenet", help="the model whose units are queried")
    args = ap.parse_args()
    for tool in ("wrk", "npm", "node"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks clean up
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    workdir = Path(tempfile.mkdtemp(prefix="kb-bench-nb-"))
    try:
        bench(args, admin, workdir)  # the npm install, when not the cache, is inside workdir
    finally:
        admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
