"""The transfer use cases of kb.app, called as the CLI calls them, on real databases: claim files (export -> import
round-trips; a bad file, or a failure before the commit, leaves the database as it was), neuron families (all the
files or none), backup and restore, a neuron looked up, a check's figures read back."""

import hashlib
import json
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BACKEND
from databases import fresh_databases
from experiment_rows import insert_experiment

from kb.app import backup, check_results, claim_files, neuron_lookup
from kb.claims import accounts as acc
from kb.claims import transfer
from kb.claims.errors import BadInput
from kb.db import annotation_tables, claim_tables, experiment_tables, migrate, render_tables, tables
from kb.db.backup import BackupProblem
from kb.db.claim_tables import claim_table
from kb.db.engine import engine_for
from kb.db.tables import TableModel, utcnow
from kb.graph.keys import NotFound
from kb.render.params import params_hash

V1_FILE = Path(__file__).parent / "data" / "claims-v1.jsonl"
TABLE_MODULES = (tables, claim_tables, annotation_tables, render_tables, experiment_tables)  # their tables, declared


@pytest.fixture(scope="module")
def fresh_db(tmp_path_factory):
    with fresh_databases(tmp_path_factory) as make:
        yield make


def _everything(url: str) -> dict[str, list]:
    """Every row of every table the code declares."""
    with engine_for(url).connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
            for name, table in TableModel.metadata.tables.items()
        }


class Recorder:
    """A Reporter that remembers the stages and the ticks; ``fail_at`` raises when that stage starts."""

    def __init__(self, fail_at: str | None = None):
        self.stages: list[str] = []
        self.ticks = 0
        self.fail_at = fail_at

    def stage(self, name, total=None):
        self.stages.append(name)
        if name == self.fail_at:
            raise RuntimeError(f"stopped at {name}")

        def tick(n):
            self.ticks += n

        return tick

    def done(self, name):
        pass


def _signed(lines: list[str]) -> bytes:
    """Records of format 2 with a valid trailer (their counts and sha256): a file only validation can refuse."""
    digest, counts = hashlib.sha256(), dict.fromkeys(transfer.READERS[transfer.FORMAT], 0)
    for line in lines:
        digest.update(line.encode() + b"\n")
        kind = json.loads(line)["type"]
        if kind in counts:
            counts[kind] += 1
    trailer = json.dumps({"type": "trailer", "counts": counts, "sha256": digest.hexdigest()})
    return "".join(line + "\n" for line in [*lines, trailer]).encode()


def test_export_then_import_round_trips(fresh_db):
    source, target = fresh_db(), fresh_db()
    first = claim_files.import_claims(engine_for(source), V1_FILE.read_bytes(), "claims-v1.jsonl")
    assert first.counts["users"] == 3 and first.counts["claims"] == 2 and first.counts["circuits"] == 1
    assert first.summary.startswith("3 users, 1 circuits")

    reporter = Recorder()
    exported = claim_files.export_claims(engine_for(source), reporter)
    assert reporter.stages == ["exporting claims"] and reporter.ticks == len(exported.lines)
    assert json.loads(exported.lines[0])["format"] == transfer.FORMAT
    assert json.loads(exported.lines[-1])["type"] == "trailer" and exported.records == len(exported.lines) - 2
    assert exported.text.endswith("\n") and exported.text.count("\n") == len(exported.lines)

    reporter = Recorder()
    moved = claim_files.import_claims(engine_for(target), exported.text.encode(), "moved.jsonl", reporter)
    assert reporter.stages == ["importing moved.jsonl", "committing"] and reporter.ticks == len(exported.lines)
    assert moved.counts["claims"] == 2 and moved.counts["circuit revisions"] == 1
    assert claim_files.export_claims(engine_for(target)).lines == exported.lines  # byte for byte
    with pytest.raises(BadInput, match="already holds claims"):
        claim_files.import_claims(engine_for(target), exported.text.encode())


def test_a_bad_file_imports_nothing(fresh_db):
    source, target = fresh_db(), fresh_db()
    claim_files.import_claims(engine_for(source), V1_FILE.read_bytes())
    lines = claim_files.export_claims(engine_for(source)).lines
    claim = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "claim")
    with engine_for(target).begin() as conn:
        acc.create_user(conn, "resident", "editor")
    before = _everything(target)  # a user of its own, which a refused import must leave alone

    bogus = json.loads(lines[claim])
    bogus["revisions"][0]["kind"] = "BOGUS"
    cases = {
        "truncated": ("".join(line + "\n" for line in lines[:-3]).encode(), "no trailer"),
        "edited": ("".join(line + "\n" for line in lines).replace("wheels", "wheeeels").encode(), "sha256"),
        "invalid record": (
            _signed([*lines[:claim], json.dumps(bogus), *lines[claim + 1 : -1]]),
            f"line {claim + 1}: revisions[0].kind",
        ),
    }
    for case, (data, expect) in cases.items():
        with pytest.raises(BadInput, match=expect.replace("[", r"\[").replace("]", r"\]")):
            claim_files.import_claims(engine_for(target), data)
        assert _everything(target) == before, case

    # a valid file whose import stops after every row is written, before the commit: none of them stays
    with pytest.raises(RuntimeError, match="stopped at committing"):
        claim_files.import_claims(
            engine_for(target), "".join(x + "\n" for x in lines).encode(), "x", Recorder("committing")
        )
    assert _everything(target) == before


def test_families_are_imported_all_or_none(engine, inceptionv1, tmp_path):
    source = f"https://example.org/families-{secrets.token_hex(3)}"
    (tmp_path / "mixed3a.json").write_text('[{"name": "pairs", "units": [0, 1, 1], "comment": "c"},]')
    (tmp_path / "mixed3b.json").write_text('[{"name": "broken", "units": [')

    def origins() -> list[str]:
        c = claim_table
        with engine.connect() as conn:
            return list(conn.execute(sa.select(c.c.origin).where(c.c.origin.startswith(source))).scalars())

    with pytest.raises(BadInput, match=r"mixed3b\.json: cannot read"):
        claim_files.import_families(engine, tmp_path, "inceptionv1", source)
    assert origins() == []  # mixed3a's claim was written, then rolled back with the rest

    (tmp_path / "mixed3b.json").unlink()
    reporter = Recorder()
    done = claim_files.import_families(engine, tmp_path, "inceptionv1", source, ["A. Author"], "T", reporter)
    assert done == claim_files.FamiliesImport(created=1, unchanged=0, files=1)
    assert reporter.stages == ["families mixed3a"] and reporter.ticks == 1
    assert origins() == [f"{source}#mixed3a/pairs"]
    assert claim_files.import_families(engine, tmp_path, "inceptionv1", source).unchanged == 1


def test_backup_then_restore_into_a_new_database(fresh_db, tmp_path):
    source, target = fresh_db(), fresh_db()
    claim_files.import_claims(engine_for(source), V1_FILE.read_bytes())
    file = tmp_path / "kb.backup"
    done = backup.backup(source, file)
    assert done.size == file.stat().st_size > 0 and done.backend == BACKEND and done.file == file
    assert done.database == (source.removeprefix("sqlite:///") if BACKEND == "sqlite" else source)  # no password
    assert "secret" not in backup.where("postgresql+psycopg://kb:secret@db.example/kb")  # for people: no password

    restored = backup.restore(target, file)
    assert restored.schema == migrate.head(target) and restored.file == file
    assert _everything(target) == _everything(source)

    busy = fresh_db()
    claim_files.import_claims(engine_for(busy), V1_FILE.read_bytes())
    with engine_for(busy).begin() as conn:
        acc.create_user(conn, "only-here", "viewer")
    before = _everything(busy)
    with pytest.raises(BackupProblem, match="already holds"):
        backup.restore(busy, file)
    assert _everything(busy) == before


def test_a_neuron_looked_up_with_its_claims_and_connections(engine, inceptionv1):
    found = neuron_lookup.look_up_neuron(engine, "InceptionV1 4c:447", inputs=150, outputs=2)
    assert found.unit.key == "inceptionv1/mixed4c:447"
    assert found.unit.pinned_key.startswith("inceptionv1@") and found.unit.pinned_key.endswith("/mixed4c:447")
    # more than one of the API's pages, in its order: offsets 0..149 without a gap, weights falling
    assert [e.offset for e in found.inputs] == list(range(150)) and len(found.outputs) == 2
    assert all(a.weight >= b.weight for a, b in zip(found.inputs, found.inputs[1:], strict=False))
    assert all(e.unit.layer.key != "mixed4c" and e.method for e in found.inputs + found.outputs)
    assert neuron_lookup.look_up_neuron(engine, "inceptionv1/mixed4c:447").inputs == []
    with pytest.raises(NotFound):
        neuron_lookup.look_up_neuron(engine, "inceptionv1/mixed4c:99999")


def test_a_checks_figures_read_back(fresh_db):
    url = fresh_db()
    engine = engine_for(url)
    claim_files.import_claims(engine, V1_FILE.read_bytes())  # circuit:4, revision 1
    params = {"circuit": "circuit:4@1", "dataset": "noise", "ablation": "mean", "images": 64, "seed": 0}
    spread = {"mean": 0.05, "std": 0.01, "draws": 10, "values": [0.05] * 10}
    result = {
        "target": "inceptionv1/mixed4c:447",
        "sufficiency": 0.8,
        "necessity": 0.7,
        "random": {"sets": [[1]] * 10, "sufficiency": spread, "necessity": spread},
        "edges": [],
    }
    j = render_tables.render_job_table
    with engine.begin() as conn:
        job, other = (
            conn.execute(
                sa.insert(j)
                .values(
                    kind="CIRCUIT_CHECK",
                    model_key="inceptionv1",
                    model_sha256="0" * 64,
                    layer_key="mixed4c",
                    unit=n,
                    params=params,
                    params_hash=params_hash("CIRCUIT_CHECK", params),
                    status="DONE",
                    created_at=utcnow(),
                )
                .returning(j.c.id)
            ).scalar_one()
            for n in (447, 448)
        )
        eid = insert_experiment(conn, 4, 1, params, result, job_id=job)
    read = check_results.check_result(engine, job)
    assert read is not None and (read.key, read.circuit, read.revision) == (f"experiment:{eid}", 4, 1)
    [target] = read.targets
    assert target.target == "inceptionv1/mixed4c:447" and target.beats_random is True
    assert target.badges[:2] == ["sufficiency 0.80", "necessity 0.70"]
    assert check_results.check_result(engine, other) is None  # done, but wrote no experiment
