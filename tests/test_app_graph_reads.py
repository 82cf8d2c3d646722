"""kb.app.graph_reads on the imported InceptionV1 (seeded random weights), called directly: a unit by any key form,
its neighbours (ranked, filtered, paged, with kernels), a subgraph, a path, a citation; the refusals and their codes.
"""

import math

import numpy as np
import pytest
import sqlalchemy as sa

from kb.app import graph_reads as reads
from kb.app.graph_reads import Direction, Order, SignFilter
from kb.app.paging import cursor
from kb.db.tables import model_table
from kb.errors import Problem
from kb.serving.graph_cache import GraphCache

UNIT = "inceptionv1/mixed4c:447"


@pytest.fixture(scope="module")
def graphs(engine, inceptionv1):
    return GraphCache(engine)


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(Problem) as caught:
        fn(*args, **kwargs)
    return caught.value.code


def test_every_key_form_is_the_same_unit(graphs):
    unit = reads.resolve(graphs, UNIT)
    assert (unit.key, unit.index, unit.layer.key) == (UNIT, 447, "mixed4c")
    sha = unit.graph.sha256
    for text in ("InceptionV1 4c:447", f"inceptionv1@{sha[:12]}/mixed4c:447", "/n/inceptionv1/mixed4c/447"):
        assert reads.resolve(graphs, text) == unit, text
    assert reads.resolve(graphs, "mixed4c:447", model="inceptionv1") == unit
    assert unit.pinned_key == f"inceptionv1@{sha[:12]}/mixed4c:447"
    assert _code(reads.resolve, graphs, "inceptionv1/mixed4c:100000") == "NOT_FOUND"
    assert _code(reads.resolve, graphs, "not a key at all") == "BAD_KEY"
    assert _code(reads.resolve_many, graphs, [UNIT] * (reads.MAX_KEYS + 1)) == "LIMIT_EXCEEDED"


def test_neighbours_are_ranked_and_filtered_as_asked(graphs):
    unit = reads.resolve(graphs, UNIT)
    pos = reads.neighbours(graphs, unit, "inputs", 20, None, Order.WEIGHT, SignFilter.POSITIVE)
    neg = reads.neighbours(graphs, unit, "inputs", 20, None, Order.WEIGHT, SignFilter.NEGATIVE)
    strong = reads.neighbours(graphs, unit, "inputs", 20, None, Order.MAGNITUDE, SignFilter.ANY)
    weights = [e.weight for e in pos.edges]
    assert weights and all(w > 0 for w in weights) and weights == sorted(weights, reverse=True)
    weights = [e.weight for e in neg.edges]
    assert weights and all(w < 0 for w in weights) and weights == sorted(weights)  # the most inhibitory first
    mags = [e.magnitude for e in strong.edges]
    assert mags == sorted(mags, reverse=True) and strong.total == 512 and pos.total + neg.total <= 512
    for e in pos.edges:  # every input of mixed4c comes from mixed4b, and the edge runs from it to this unit
        assert e.unit.layer.key == "mixed4b" and (e.source, e.target) == (e.unit.ordinal, unit.ordinal)
        assert e.kernel is None and e.method in ("direct", "expanded")


def test_a_kernel_sums_to_the_weight_and_its_norm_is_the_magnitude(graphs):
    unit = reads.resolve(graphs, UNIT)
    page = reads.neighbours(graphs, unit, "outputs", 3, kernels=True)
    for e in page.edges:
        k = np.array(e.kernel)
        assert k.ndim == 2 and e.unit.layer.key == "mixed4d" and e.source == unit.ordinal
        assert float(k.sum()) == pytest.approx(e.weight, rel=1e-3, abs=1e-5)
        assert float(np.sqrt((k**2).sum())) == pytest.approx(e.magnitude, rel=1e-3, abs=1e-5)
        assert e.kernel == reads.kernel(graphs, unit.graph, e.source, e.target)


def test_an_input_is_an_output_the_other_way(graphs):
    unit = reads.resolve(graphs, UNIT)
    first = reads.neighbours(graphs, unit, "inputs", 1).edges[0]
    back = reads.neighbours(graphs, first.unit, "outputs", 100, None, Order.WEIGHT, SignFilter.ANY)
    while not any(e.unit == unit for e in back.edges) and back.stop < back.total:
        back = reads.neighbours(graphs, first.unit, "outputs", 100, cursor(back.stop - 1))
    (mirror,) = [e for e in back.edges if e.unit == unit]
    assert (mirror.source, mirror.target, mirror.weight) == (first.source, first.target, first.weight)


def test_pages_follow_each_other(graphs):
    unit = reads.resolve(graphs, UNIT)
    whole = reads.neighbours(graphs, unit, "inputs", 7)
    one = reads.neighbours(graphs, unit, "inputs", 3)
    two = reads.neighbours(graphs, unit, "inputs", 4, cursor(one.edges[-1].offset))
    assert (one.start, one.stop, two.start, two.stop) == (0, 3, 3, 7)
    assert [e.unit.key for e in one.edges + two.edges] == [e.unit.key for e in whole.edges]
    assert reads.neighbours(graphs, unit, "inputs").stop == 10  # the default page
    assert reads.neighbours(graphs, unit, "inputs", 0).edges == []
    assert _code(reads.neighbours, graphs, unit, "inputs", -1) == "BAD_INPUT"
    assert _code(reads.neighbours, graphs, unit, "inputs", 101) == "LIMIT_EXCEEDED"
    assert _code(reads.neighbours, graphs, unit, "inputs", 3, "bm90IGEgY3Vyc29y") == "BAD_INPUT"


def test_a_subgraph_takes_each_units_top_edges(graphs):
    unit = reads.resolve(graphs, UNIT)
    sub = reads.subgraph(graphs, ["InceptionV1 4c:447"], Direction.UPSTREAM, 1, 3)
    top = reads.neighbours(graphs, unit, "inputs", 3)
    assert {(e.source.key, e.target.key) for e in sub.edges} == {(e.unit.key, UNIT) for e in top.edges}
    assert unit in sub.nodes and {n.key for n in sub.nodes} == {UNIT, *(e.unit.key for e in top.edges)}
    deeper = reads.subgraph(graphs, [UNIT], Direction.UPSTREAM, 2, 3)
    assert len(deeper.nodes) > len(sub.nodes) and {n.layer.key for n in deeper.nodes} == {
        "mixed4a",
        "mixed4b",
        "mixed4c",
    }
    down = reads.subgraph(graphs, [UNIT], Direction.DOWNSTREAM, 1, 2, Order.WEIGHT, SignFilter.NEGATIVE)
    assert len(down.edges) == 2 and all(e.source == unit and e.weight < 0 for e in down.edges)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"depth": 0}, "BAD_INPUT"),
        ({"depth": reads.MAX_DEPTH + 1}, "LIMIT_EXCEEDED"),
        ({"per_node": 0}, "BAD_INPUT"),
        ({"per_node": reads.MAX_PER_NODE + 1}, "LIMIT_EXCEEDED"),
        ({"roots": []}, "BAD_INPUT"),
        ({"roots": [UNIT] * (reads.MAX_KEYS + 1)}, "BAD_INPUT"),
        ({"roots": ["inceptionv1/nolayer:1"]}, "NOT_FOUND"),
    ],
)
def test_a_subgraph_out_of_bounds_is_refused_with_its_code(graphs, kwargs, code):
    args = {"roots": [UNIT], **kwargs}
    assert _code(reads.subgraph, graphs, **args) == code


def test_a_path_is_a_chain_whose_score_is_its_weights_product(graphs):
    path = reads.path(graphs, "InceptionV1 4a:1", UNIT)
    assert path.nodes[0].key == "inceptionv1/mixed4a:1" and path.nodes[-1].key == UNIT
    assert [n.layer.key for n in path.nodes] == ["mixed4a", "mixed4b", "mixed4c"]
    assert [(e.source, e.target) for e in path.edges] == list(zip(path.nodes, path.nodes[1:], strict=False))
    assert all(e.weight > 0 for e in path.edges)
    assert path.score == pytest.approx(math.prod(e.weight for e in path.edges))
    for e in path.edges:  # each edge's weight is its kernel's sum
        kernel = reads.kernel(graphs, e.source.graph, e.source.ordinal, e.target.ordinal)
        assert float(np.sum(kernel)) == pytest.approx(e.weight, rel=1e-3, abs=1e-5)
    assert _code(reads.path, graphs, UNIT, "InceptionV1 4c:448") == "BAD_INPUT"  # one layer: no chain


def test_a_citation_is_pinned_to_the_weights(graphs, engine):
    unit = reads.resolve(graphs, "InceptionV1 4c:447")
    c = reads.citation(graphs, "https://kb.example.org/", unit)
    with engine.connect() as conn:
        m = model_table
        sha, at = conn.execute(sa.select(m.c.sha256, m.c.imported_at).where(m.c.key == "inceptionv1")).one()
    assert c.key == f"inceptionv1@{sha[:12]}/mixed4c:447"
    assert c.url == f"https://kb.example.org/n/inceptionv1@{sha[:12]}/mixed4c/447"
    assert c.text == f"{UNIT} (pinned {c.key}), Circuit KB, {c.url}"
    assert c.bibtex.startswith("@misc{inceptionv1_") and f"year = {{{at.year}}}" in c.bibtex and sha in c.bibtex
