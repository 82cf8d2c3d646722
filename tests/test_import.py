"""Import into the database: hand-computed edges, stable keys, refusals that leave the database unchanged."""

import sqlite3
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import sqlalchemy as sa
import tiny
import torch

from kb.app import model_import as importer
from kb.app.model_import import ImportProblem, import_model, remove_model
from kb.db import bulk
from kb.db.catalog import load_catalog
from kb.db.tables import LayerLink
from kb.graph import extract, program, zoo
from kb.graph.keys import Removed
from kb.graph.weights import WeightsProblem, load, reload, state_dict_sha256

COUNTS = (
    "SELECT (SELECT count(*) FROM model), (SELECT count(*) FROM layer), (SELECT count(*) FROM neuron), "
    "(SELECT count(*) FROM layer_link), (SELECT count(*) FROM connection)"
)


def counts(engine):
    with engine.connect() as conn:
        return tuple(conn.exec_driver_sql(COUNTS).one())


def edges(engine, key):
    sql = """
        SELECT sl.key, s."index", tl.key, t."index", c.weight, c.magnitude, k.method
        FROM connection c
        JOIN neuron s ON s.id = c.source_id JOIN layer sl ON sl.id = s.layer_id
        JOIN neuron t ON t.id = c.target_id JOIN layer tl ON tl.id = t.layer_id
        JOIN layer_link k ON k.source_layer_id = sl.id AND k.target_layer_id = tl.id
        JOIN model m ON m.id = t.model_id WHERE m.key = :key"""
    with engine.connect() as conn:
        return {(a, b, c, d): (w, g, meth) for a, b, c, d, w, g, meth in conn.execute(sa.text(sql), {"key": key})}


@pytest.fixture(scope="module")
def tiny_model(engine, tiny_arch):
    report = import_model(engine, "test:tiny", key="tiny-hand", weights="random")
    assert report.edges == len(tiny.EXPECTED) and report.units == 6
    return report


def test_hand_built_network_edges(engine, tiny_model):
    got = edges(engine, "tiny-hand")
    assert set(got) == set(tiny.EXPECTED)
    for k, (weight, magnitude) in tiny.EXPECTED.items():
        w, g, method = got[k]
        assert w == pytest.approx(weight, abs=1e-5), k
        assert g == pytest.approx(magnitude, abs=1e-5), k
        assert method == tiny.METHODS[(k[0], k[2])]


def test_kernel_is_retrievable_from_the_stored_program(engine, tiny_model):
    t = LayerLink.__table__
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.program, t.c.arrays, t.c.method, t.c.notes)).all()
    by_out = {}
    for meta, arrays, _method, notes in rows:
        p = program.loads(meta, arrays)
        by_out[p.out_channels, p.terms[0].label] = (p, notes)
    p, notes = next(v for (n, label), v in by_out.items() if label.startswith("block"))
    k = p.kernel(1)  # branch b: a 6x6 kernel of 0.5 from c2:0, zeros from c2:1
    np.testing.assert_allclose(k.weight[0, 0], np.full((6, 6), 0.5), atol=1e-6)
    np.testing.assert_allclose(k.weight[0, 1], 0.0, atol=1e-6)
    assert any("linearised as its average" in n for n in notes)


def test_same_weights_again_is_a_no_op(engine, tiny_model):
    before = counts(engine)
    again = import_model(engine, "test:tiny", key="tiny-hand", weights="random")
    assert again.already and again.sha256 == tiny_model.sha256
    assert counts(engine) == before


def test_other_weights_under_a_taken_key_are_refused(engine, tiny_model):
    before = counts(engine)
    with pytest.raises(ImportProblem, match="taken"):
        import_model(engine, "torchvision:alexnet", key="tiny-hand", weights="random")
    assert counts(engine) == before


def test_checkpoint_gives_the_same_hash_and_a_wrong_one_is_refused(engine, tiny_model, tmp_path, tiny_arch):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny.build().state_dict()}, path)
    before = counts(engine)
    report = import_model(engine, "test:tiny", key="tiny-hand", weights=str(path))
    assert report.already and report.sha256 == tiny_model.sha256
    bad = tmp_path / "bad.pt"
    state = tiny.build().state_dict()
    state["conv1.weight"] = torch.zeros(3, 1, 1, 1)
    torch.save(state, bad)
    with pytest.raises(WeightsProblem, match=r"does not fit test:tiny: 1 shapes differ, e.g. conv1.weight"):
        import_model(engine, "test:tiny", key="tiny-other", weights=str(bad))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsProblem, match="cannot read checkpoint"):
        import_model(engine, "test:tiny", key="tiny-other", weights=str(tmp_path / "junk.pt"))
    assert counts(engine) == before


def test_hash_is_canonical():
    a = tiny.build().state_dict()
    b = dict(reversed(list(a.items())))
    b["bn2.num_batches_tracked"] = torch.tensor(99)
    assert state_dict_sha256(a) == state_dict_sha256(b)
    b["conv1.weight"] = b["conv1.weight"] + 1e-7
    assert state_dict_sha256(a) != state_dict_sha256(b)


def test_lucent_weights_by_name_are_lucids_and_recorded_as_such(tmp_path, monkeypatch):
    """lucid and DEFAULT load the file torch.hub caches for lucent's download (written here: there is no network)
    and are recorded as "lucid", which a render worker's reload reads back."""
    from lucent.modelzoo.inceptionv1.InceptionV1 import model_urls

    arch = zoo.get("lucent:inceptionv1")
    torch.manual_seed(3)  # not the seed load() builds with: the weights must come from the file
    state = arch.build().state_dict()
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / Path(urlparse(model_urls["inceptionv1"]).path).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    want = state_dict_sha256(state)
    for name in ("lucid", "DEFAULT", None):
        model, described = load(arch, name)
        assert described == "lucid", name
        assert state_dict_sha256(model.state_dict()) == want, name
    assert state_dict_sha256(reload(arch, "lucid").state_dict()) == want


def test_unknown_lucent_weights_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached, nothing fetched
    arch = zoo.get("lucent:inceptionv1")
    with pytest.raises(WeightsProblem) as refused:
        load(arch, "IMAGENET1K_V1")
    message = str(refused.value)
    assert message.startswith("lucent:inceptionv1 has no weights 'IMAGENET1K_V1' (choose from lucid, DEFAULT")
    assert "\n" not in message
    assert not (tmp_path / "torch").exists()  # refused before any download was tried


def test_failed_import_leaves_nothing(engine, tiny_arch, monkeypatch):
    before = counts(engine)
    real = bulk.index_connections

    def fail_after_writing(conn, model_id):  # every row is written by then: connections, links, their index
        real(conn, model_id)
        raise RuntimeError("disk full")

    monkeypatch.setattr(bulk, "index_connections", fail_after_writing)
    with pytest.raises(RuntimeError, match="disk full"):
        import_model(engine, "test:tiny", key="tiny-fails", weights="random")
    assert counts(engine) == before


def test_bad_keys_and_sources(engine, tiny_arch):
    with pytest.raises(ImportProblem, match="not valid"):
        import_model(engine, "test:tiny", key="Bad Key", weights="random")
    with pytest.raises(ImportProblem, match="unknown torchvision classification model 'torchvision:nonet'"):
        import_model(engine, "torchvision:nonet", weights="random")
    with pytest.raises(ImportProblem, match="unknown architecture 'nonet:x'"):
        import_model(engine, "nonet:x", weights="random")


def test_removed_model_leaves_a_tombstone(engine, tiny_arch):
    import_model(engine, "test:tiny", key="tiny-removed", weights="random")
    with engine.connect() as conn:
        assert str(load_catalog(conn).neuron("tiny-removed/mixed:1")) == "tiny-removed/mixed:1"
    remove_model(engine, "tiny-removed", "test")
    with engine.connect() as conn:
        with pytest.raises(Removed):
            load_catalog(conn).neuron("tiny-removed/mixed:1")
        model_id = conn.exec_driver_sql("SELECT id FROM model WHERE key = 'tiny-removed'").scalar_one()
        left = conn.exec_driver_sql(f"SELECT count(*) FROM neuron WHERE model_id = {model_id}").scalar_one()
        assert left == 0
    with pytest.raises(ImportProblem, match="never reused"):
        import_model(engine, "test:tiny", key="tiny-removed", weights="random")
    # the hand-built model's edges were not touched
    assert len(edges(engine, "tiny-hand")) == len(tiny.EXPECTED)


def test_bulk_write_of_several_pieces_reads_back_exactly(engine):
    """More rows than one piece (262,144) and than one SQLite statement (249 rows under the 999-parameter limit
    set here), with a remainder of each: every row reads back with its float32 weight and magnitude unchanged, in
    key order. Rolled back afterwards."""
    rng = np.random.default_rng(7)
    targets = np.arange(1_000_000, 1_000_700, dtype=np.int32)  # ids no neuron has: no model is touched
    sources = np.sort(rng.choice(np.arange(2_000_000, 2_100_000, dtype=np.int32), 401, replace=False))
    weight = rng.standard_normal((700, 401), dtype=np.float32)
    magnitude = np.abs(rng.standard_normal((700, 401), dtype=np.float32))
    weight[0, 0], magnitude[0, 0] = np.float32(1e-38), np.float32(3.4e38)  # float32's extremes survive
    block = bulk.EdgeBlock(targets, sources, weight, magnitude)
    assert len(list(block.pieces(bulk._PIECE_ROWS))) == 2
    model_id = 999_999
    with engine.connect() as conn:
        tx = conn.begin()
        raw = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":  # as an SQLite before 3.32 allows: 999 parameters, 249 rows a statement
            limit = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        try:
            assert bulk.copy_connections(conn, model_id, [block]) == 700 * 401
            bulk.index_connections(conn, model_id)
            rows = conn.exec_driver_sql(
                "SELECT target_id, source_id, weight, magnitude FROM connection "
                f"WHERE model_id = {model_id} ORDER BY target_id, source_id"
            ).all()
        finally:
            tx.rollback()
            if engine.dialect.name == "sqlite":
                raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    got = np.array(rows, dtype=np.float64)
    assert got.shape == (700 * 401, 4)
    np.testing.assert_array_equal(got[:, 0], np.repeat(targets, 401))
    np.testing.assert_array_equal(got[:, 1], np.tile(sources, 700))
    np.testing.assert_array_equal(got[:, 2].astype(np.float32), weight.reshape(-1))
    np.testing.assert_array_equal(got[:, 3].astype(np.float32), magnitude.reshape(-1))


def test_each_link_waits_for_the_programs_before_it_to_be_on_file(tiny_arch, monkeypatch):
    """No link's edges start while an earlier link's program is still held for the dump (VGG16's fc6 is 0.4 GB)."""
    model, _ = load(tiny_arch, "random", 0)
    _, links = extract.links(model, tiny_arch)
    real_dump = program.dump
    asked = [threading.Event() for _ in links]
    order = iter(range(len(links)))

    def held_dump(*args):  # slower than the edges, as VGG16's fc6 is: on file only once the link's edges are done
        i = next(order)
        assert asked[i].wait(60), f"link {i}'s edges never came to wait for its program"
        return real_dump(*args)

    monkeypatch.setattr(program, "dump", held_dump)
    seen = []
    with importer._ProgramDump(links) as dump:

        def after(i):
            asked[i].set()
            dump.wait_written(i)
            seen.append((i, dump._written))

        chunks = list(importer.link_chunks(list(links), release=True, after_link=after))
        assert len(dump.result()) == len(links)
    assert {c[0] for c in chunks} == set(range(len(links)))
    assert [i for i, _ in seen] == list(range(len(links)))
    assert all(written > i for i, written in seen)


def test_a_failed_program_dump_does_not_hold_the_edges_up(tiny_arch, monkeypatch):
    model, _ = load(tiny_arch, "random", 0)
    _, links = extract.links(model, tiny_arch)

    def disk_full(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(program, "dump", disk_full)
    with importer._ProgramDump(links) as dump:
        waiter = threading.Thread(target=dump.wait_written, args=(len(links) - 1,))
        waiter.start()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        with pytest.raises(OSError, match="disk full"):
            dump.result()


def test_no_connection_is_written_twice(engine, inceptionv1):
    """Each (target, source) pair once: the importer makes every pair once by construction, and on PostgreSQL no key
    checks it (a partition's only index is a BRIN on target_id), so this counts them, on both databases."""
    with engine.connect() as conn:
        model_id = conn.exec_driver_sql("SELECT id FROM model WHERE key = 'inceptionv1'").scalar_one()
        total, pairs = conn.exec_driver_sql(
            "SELECT count(*), count(DISTINCT target_id * 4294967296 + source_id) FROM connection "
            f"WHERE target_id IN (SELECT id FROM neuron WHERE model_id = {model_id})"
        ).one()
    assert total == pairs == 3_208_320


def test_a_range_of_targets_is_read_through_the_index_not_the_whole_partition(engine, inceptionv1):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's partitions only; SQLite's table is its (target_id, source_id) key")
    with engine.connect() as conn:
        model_id, lo = conn.exec_driver_sql(
            "SELECT m.id, min(n.id) FROM model m JOIN neuron n ON n.model_id = m.id "
            "WHERE m.key = 'inceptionv1' GROUP BY m.id"
        ).one()
        indexes = (
            conn.exec_driver_sql(f"SELECT indexdef FROM pg_indexes WHERE tablename = '{bulk.partition_name(model_id)}'")
            .scalars()
            .all()
        )
        plan = "\n".join(
            conn.exec_driver_sql(
                f"EXPLAIN SELECT * FROM connection WHERE model_id = {model_id} AND target_id BETWEEN {lo + 3000} "
                f"AND {lo + 3100}"
            ).scalars()
        )
    assert len(indexes) == 1 and "USING brin (target_id)" in indexes[0]
    assert "Bitmap Index Scan" in plan and "Seq Scan" not in plan, plan
