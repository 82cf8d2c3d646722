"""Candidate circuits from the weight graph: the subgraph around units, and the strongest path between two.

Pure functions over a ``ModelGraph`` (kb.graph.store); no database, no GraphQL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kb.errors import Problem
from kb.graph.store import ANY, WEIGHT, ModelGraph

UPSTREAM, DOWNSTREAM, BOTH = "upstream", "downstream", "both"


class CircuitProblem(Problem, ValueError):
    code = "BAD_INPUT"


class NoPath(CircuitProblem):
    code = "NOT_FOUND"


class TooLarge(CircuitProblem):
    code = "TOO_LARGE"


@dataclass(frozen=True)
class Edge:
    source: int  # ordinals
    target: int
    weight: float
    magnitude: float


@dataclass(frozen=True)
class Subgraph:
    nodes: list[int]
    edges: list[Edge]


def subgraph(
    g: ModelGraph,
    roots: list[int],
    direction: str,
    depth: int,
    per_node: int,
    order: str = WEIGHT,
    sign: str = ANY,
    max_edges: int = 20_000,
) -> Subgraph:
    """Breadth-first from the roots, keeping each node's top ``per_node`` edges (by ``order``) per hop.

    UPSTREAM follows inputs, DOWNSTREAM outputs, BOTH each. Nodes come in discovery order (roots first).
    """
    nodes: dict[int, None] = dict.fromkeys(roots)
    edges: dict[tuple[int, int], Edge] = {}
    frontier = list(nodes)
    ways = {UPSTREAM: ("inputs",), DOWNSTREAM: ("outputs",), BOTH: ("inputs", "outputs")}[direction]
    for _ in range(depth):
        found: list[int] = []
        for node in frontier:
            for way in ways:
                rows = getattr(g, way)
                for p in rows.positions(node, order, sign)[:per_node]:
                    other = int(rows.other[p])
                    src, tgt = (other, node) if way == "inputs" else (node, other)
                    if (src, tgt) not in edges:
                        edges[src, tgt] = Edge(src, tgt, float(rows.weight[p]), float(rows.magnitude[p]))
                        if len(edges) > max_edges:
                            raise TooLarge(f"the subgraph has more than {max_edges} edges: lower depth or perNode")
                    if other not in nodes:
                        nodes[other] = None
                        found.append(other)
        frontier = found
        if not frontier:
            break
    return Subgraph(list(nodes), list(edges.values()))


@dataclass(frozen=True)
class Path:
    edges: list[Edge]
    score: float  # product of the edge weights


def strongest_path(g: ModelGraph, a: int, b: int) -> Path:
    """The chain of edges from the earlier unit to the later one with the largest product of weights, using
    only excitatory (positive) edges: a dynamic programme over log-weights, one layer at a time.

    Edges only join consecutive significant layers, so a path visits each layer in between exactly once.
    """
    la, lb = int(g.layer_of[a]), int(g.layer_of[b])
    if la == lb:
        raise CircuitProblem("both units are in the same layer: a path needs units of different layers")
    if la > lb:
        a, b, la, lb = b, a, lb, la
    out = g.outputs
    best = {a: 0.0}  # ordinal -> best log-score
    parents: list[dict[int, tuple[int, int]]] = []  # per hop: target -> (source, position in outputs)
    for _ in range(la, lb):
        srcs = np.fromiter(best.keys(), dtype=np.int64)
        scores = np.fromiter(best.values(), dtype=np.float64)
        lo, hi = out.indptr[srcs], out.indptr[srcs + 1]
        counts = out.positives[srcs].astype(np.int64)  # positives are a prefix of each row
        if counts.sum() == 0:
            raise NoPath(f"no excitatory path from {_name(g, a)} to {_name(g, b)}")
        pos = np.concatenate([np.arange(s, s + c) for s, c in zip(lo, counts, strict=True)])
        owner = np.repeat(np.arange(len(srcs)), counts)
        cand = scores[owner] + np.log(out.weight[pos].astype(np.float64))
        tgt = out.other[pos]
        order = np.lexsort((-cand, tgt))
        first = np.ones(len(order), dtype=bool)
        first[1:] = tgt[order][1:] != tgt[order][:-1]
        keep = order[first]
        best = {int(t): float(c) for t, c in zip(tgt[keep], cand[keep], strict=True)}
        parents.append({int(t): (int(srcs[owner[k]]), int(pos[k])) for t, k in zip(tgt[keep], keep, strict=True)})
        del hi
    if b not in best:
        raise NoPath(f"no excitatory path from {_name(g, a)} to {_name(g, b)}")
    chain, node = [], b
    for hop in reversed(parents):
        src, p = hop[node]
        chain.append(Edge(src, node, float(out.weight[p]), float(out.magnitude[p])))
        node = src
    chain.reverse()
    return Path(chain, float(np.exp(best[b])))


def _name(g: ModelGraph, ordinal: int) -> str:
    layer, index = g.unit(ordinal)
    return f"{g.key}/{layer.key}:{index}"
