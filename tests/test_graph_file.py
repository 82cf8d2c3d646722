"""The serving graph file: written at import, mapped by the server, checked against the database and rebuilt when
it is missing, stale or corrupt; `kb models remove` deletes it."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tiny

from kb.app.model_import import import_model
from kb.db import graph_read
from kb.graph import graph_file
from kb.serving.graph_cache import GraphCache


def same_graph(a, b):
    assert a.key == b.key and a.sha256 == b.sha256 and a.layers == b.layers and a.methods == b.methods
    assert np.array_equal(a.neuron_ids, b.neuron_ids)
    for direction in ("inputs", "outputs"):
        x, y = getattr(a, direction), getattr(b, direction)
        for field in vars(x):
            assert np.array_equal(getattr(x, field), getattr(y, field)), (direction, field)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tmp_path_factory.mktemp("data") / "graphs"  # where Settings(data_dir=its parent) puts them


@pytest.fixture(scope="module")
def tiny_file(engine, tiny_arch, graphs):
    report = import_model(engine, "test:tiny", key="tiny-file", weights="random", graphs_dir=graphs)
    assert report.graph_file == graphs / graph_file.file_name("tiny-file", report.sha256)
    return report.graph_file


def in_memory(engine, key):
    with engine.connect() as conn:
        return graph_read.read_model_graph(conn, key)


def test_import_writes_the_file_the_server_maps(engine, tiny_file, graphs):
    cache = GraphCache(engine, graphs_dir=graphs)
    g = cache.graph("tiny-file")
    assert g.file == str(tiny_file) and cache.rebuilt == []
    assert not g.inputs.weight.flags.writeable  # a read-only map of the file, not a copy
    same_graph(g, in_memory(engine, "tiny-file"))
    # the hand-computed weights, through the file: c2:1's inputs by weight are c1:0 (22.5), then c1:1 (0.0)
    row = g.ordinal("c2", 1)
    pos = g.inputs.positions(row)
    assert [int(g.inputs.other[p]) for p in pos] == [g.ordinal("c1", 0), g.ordinal("c1", 1)]
    assert g.inputs.weight[pos[0]] == pytest.approx(tiny.EXPECTED[("c1", 0, "c2", 1)][0])
    assert cache.memory()[0]["file"] == tiny_file.name


def test_missing_file_is_rebuilt_from_the_database(engine, tiny_file, graphs):
    tiny_file.unlink()
    cache = GraphCache(engine, graphs_dir=graphs)
    g = cache.graph("tiny-file")
    assert [k for k, _ in cache.rebuilt] == ["tiny-file"] and "missing" in cache.rebuilt[0][1]
    assert tiny_file.is_file()
    same_graph(g, in_memory(engine, "tiny-file"))
    again = GraphCache(engine, graphs_dir=graphs)  # another process maps it as it is
    assert again.graph("tiny-file").file == str(tiny_file) and again.rebuilt == []


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b[:-4] + bytes([b[-4] ^ 0xFF]) + b[-3:], "checksum"),  # a bit flipped in the arrays
        (lambda b: b[: len(b) // 2], "bytes"),  # truncated
        (lambda b: b"not a graph file" + b[16:], "not a graph file"),
        (lambda b: b[:30] + b"\xff" + b[31:], "header"),  # the JSON header damaged
    ],
)
def test_corrupt_file_is_rebuilt(engine, tiny_file, graphs, damage, why):
    GraphCache(engine, graphs_dir=graphs).graph("tiny-file")  # the file exists and is good
    good, checked = tiny_file.read_bytes(), tiny_file.stat().st_mtime_ns
    tiny_file.write_bytes(damage(good))
    # file times are coarse (a clock tick): the damage is dated a second after the checked file, as a real one is
    os.utime(tiny_file, ns=(checked, checked + 1_000_000_000))
    with pytest.raises(graph_file.GraphFileProblem, match=why):
        graph_file.open_file(tiny_file)
    cache = GraphCache(engine, graphs_dir=graphs)
    g = cache.graph("tiny-file")
    assert len(cache.rebuilt) == 1 and why in cache.rebuilt[0][1]
    assert tiny_file.read_bytes() == good
    same_graph(g, in_memory(engine, "tiny-file"))


def test_stale_file_is_rebuilt(engine, tiny_file, graphs):
    """A file whose checksum is fine but which describes another database's rows (same weights, other ids)."""
    with engine.connect() as conn:
        x = graph_read.expected(conn, "tiny-file")
    for stale in (
        replace(x, model_id=x.model_id + 1000),
        replace(x, neuron_ids=x.neuron_ids + 1),
        replace(x, layers=[replace(x.layers[0], id=x.layers[0].id + 1000), *x.layers[1:]]),
    ):
        writer = graph_file.Writer(tiny_file, stale)
        for i, link in enumerate(stale.links):
            s, t = stale.layers[link.source], stale.layers[link.target]
            writer.add(i, np.arange(t.units), np.ones((t.units, s.units)), np.ones((t.units, s.units)))
        writer.finish()
        cache = GraphCache(engine, graphs_dir=graphs)
        g = cache.graph("tiny-file")
        assert len(cache.rebuilt) == 1 and "stale" in cache.rebuilt[0][1]
        same_graph(g, in_memory(engine, "tiny-file"))


def test_removed_model_frees_its_file(engine, tiny_arch, kb_env):
    graphs = Path(kb_env["KB_DATA_DIR"]) / "graphs"
    report = import_model(engine, "test:tiny", key="tiny-gone", weights="random", graphs_dir=graphs)
    cache = GraphCache(engine, graphs_dir=graphs)
    assert cache.graph("tiny-gone").file == str(report.graph_file)
    exe = Path(sys.executable).parent / "kb"
    r = subprocess.run(
        [exe, "models", "remove", "tiny-gone", "--reason", "test"],
        env={**os.environ, **kb_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "deleted" in r.stdout and report.graph_file.name in r.stdout
    assert not report.graph_file.exists() and not list(graphs.glob("*tiny-gone*"))
    cache.catalog(refresh=True)  # a server drops the removed model's graph (and its map) on its next catalog read
    assert "tiny-gone" not in [m["model"] for m in cache.memory()]
    with pytest.raises(LookupError):
        cache.graph("tiny-gone")


def test_health_lists_the_mapped_graphs(engine, tiny_file, graphs, db_url):
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    GraphCache(engine, graphs_dir=graphs).graph("tiny-file")  # the file is good
    app = create_app(Settings(database_url=db_url, data_dir=graphs.parent), engine=engine, warm=False)
    with TestClient(app) as client:
        r = client.post("/graphql", json={"query": '{ neuron(key: "tiny-file/c2:1") { key } }'})
        assert r.json()["data"]["neuron"]["key"] == "tiny-file/c2:1"
        health = client.get("/health").json()
    loaded = {g["model"]: g for g in health["graphs"]}
    assert loaded["tiny-file"]["file"] == tiny_file.name and loaded["tiny-file"]["edges"] == len(tiny.EXPECTED)
    assert loaded["tiny-file"]["bytes"] > 0 and health["process_rss_bytes"] > 0
    assert health["graphs_loaded"] == len(health["graphs"])


def test_file_rows_equal_the_in_memory_sort(tmp_path):
    """Without a database: ties, signed zeros and chunked targets give the arrays ``store.build`` gives."""
    from kb.graph import store

    rng = np.random.default_rng(0)
    layers = [store.LayerInfo(10, "a", 0, 5, 0), store.LayerInfo(11, "b", 1, 7, 5), store.LayerInfo(12, "c", 2, 3, 12)]
    links = [graph_file.Link(0, 1, "direct"), graph_file.Link(1, 2, "expanded")]
    x = graph_file.Expected(1, "m", "ab" * 32, layers, links, np.arange(100, 115, dtype=np.int64))
    writer = graph_file.Writer(tmp_path / "m.kbgraph", x)
    target, source, weight, magnitude = [], [], [], []
    for i, link in enumerate(links):
        s, t = layers[link.source], layers[link.target]
        w = rng.choice(np.array([-1.0, -0.0, 0.0, 0.5, 2.0], np.float32), size=(t.units, s.units))
        g = np.abs(w) + rng.choice(np.array([0.0, 1.0], np.float32), size=w.shape)  # ties in magnitude too
        for lo in range(0, t.units, 2):  # chunks of two target units
            writer.add(i, np.arange(lo, min(lo + 2, t.units)), w[lo : lo + 2], g[lo : lo + 2])
        tt, ss = np.meshgrid(np.arange(t.units), np.arange(s.units), indexing="ij")
        target.append((tt + t.first).ravel())
        source.append((ss + s.first).ravel())
        weight.append(w.ravel())
        magnitude.append(g.ravel())
    path = writer.finish()
    mapped = graph_file.open_file(path)
    graph_file.check(mapped, x)
    got = graph_file.to_graph(mapped)
    perm = rng.permutation(sum(len(a) for a in target))  # the in-memory build takes edges in any order
    cat = [np.concatenate(a)[perm] for a in (target, source, weight, magnitude)]
    want = store.build(1, "m", "ab" * 32, layers, x.neuron_ids, *cat, {(0, 1): "direct", (1, 2): "expanded"})
    same_graph(got, want)
    with pytest.raises(graph_file.GraphFileProblem, match="stale: its sha256"):
        graph_file.check(mapped, replace(x, sha256="cd" * 32))


def test_descending_is_the_stable_sort_of_the_negated_values():
    """The graph file orders rows with 64-bit keys; it must be exactly argsort(-v, stable): ties (zeros, -0.0,
    repeated values) by column, infinities and subnormals in place."""
    from kb.graph.graph_file import descending

    rng = np.random.default_rng(3)
    v = rng.standard_normal((40, 300)).astype(np.float32)
    v[:, ::7] = 0.0
    v[:, 3::11] = -0.0
    v[:, 5::13] = 1.25
    v[0, :4] = [np.inf, -np.inf, 1e-45, -1e-45]
    got = descending(v)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.argsort(-v, axis=1, kind="stable"))
