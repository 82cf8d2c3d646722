"""Loading a model's serving graph (what `kb serve` does once per model): the packed-key sort against
np.lexsort, in the same run, on the same edges.

Reads the edges of an imported model once, then times building the in-memory graph both ways (median of 3
alternating rounds), and the whole read (database + build) once. Usage:

    KB_DATABASE_URL=postgresql+psycopg://... python bench/graph_load.py [--model inceptionv1]

With ``--files``, instead: what a fresh server process does before its first answer about the model, with its
graph file (map it, check it against the database; KB_DATA_DIR/graphs) against the previous way (read every
edge from the database and sort), median of ``--rounds`` alternating rounds in this process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from kb.db.engine import engine_for
from kb.db.graph_read import read_model_graph
from kb.graph import store
from kb.settings import get_settings


def lexsort_order(n, row, values, tie=None):
    """The previous implementation."""
    return np.lexsort((np.arange(len(row)) if tie is None else tie, -values, row))


def files(engine, model: str, rounds: int) -> None:
    from kb.serving.graph_cache import GraphCache

    mapped, read = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        cache = GraphCache(engine, graphs_dir=get_settings().graphs_dir)
        g = cache.graph(model)
        mapped.append(time.perf_counter() - t)
        assert g.file and not cache.rebuilt, f"no valid graph file for {model}: {cache.rebuilt}"
        t = time.perf_counter()
        with engine.connect() as conn:
            read_model_graph(conn, model)
        read.append(time.perf_counter() - t)
    m, r = statistics.median(mapped), statistics.median(read)
    print(f"{model}: {g.inputs.indptr[-1]:,} edges; graph file {g.nbytes / 2**20:.0f} MB")
    print(f"map the graph file and check it against the database: {m:.3f} s")
    print(f"read the edges from the database and sort them:      {r:.3f} s")
    print(f"ratio: {r / m:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="inceptionv1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", action="store_true", help="graph file against the database read")
    args = ap.parse_args()
    engine = engine_for(get_settings().db_url)
    if args.files:
        files(engine, args.model, args.rounds)
        return
    t = time.perf_counter()
    with engine.connect() as conn:
        g = read_model_graph(conn, args.model)
    whole = time.perf_counter() - t
    if g is None:
        raise SystemExit(f"no model {args.model!r} in {engine.url}")
    rows = g.inputs
    n = len(rows.indptr) - 1
    mine = np.repeat(np.arange(n), np.diff(rows.indptr))
    shuffle = np.random.default_rng(0).permutation(len(mine))  # the database returns edges in no useful order
    edges = (n, mine[shuffle], rows.other.astype(np.int64)[shuffle], rows.weight[shuffle], rows.magnitude[shuffle])
    packed, lex = [], []
    current = store._by_row_then_descending
    for _ in range(args.rounds):
        for impl, out in ((current, packed), (lexsort_order, lex)):
            store._by_row_then_descending = impl
            try:
                t = time.perf_counter()
                store.Rows.build(*edges)
                out.append(time.perf_counter() - t)
            finally:
                store._by_row_then_descending = current
    p, b = statistics.median(packed), statistics.median(lex)
    print(f"{args.model}: {len(mine):,} edges, {n:,} units; whole read (database + both directions) {whole:.2f} s")
    print(f"one direction's rows, np.lexsort:  {b:.2f} s")
    print(f"one direction's rows, packed key: {p:.2f} s")
    print(f"ratio: {b / p:.2f}x")


if __name__ == "__main__":
    main()
