"""Render bundles (`kb renders export|import`): a model version's renders, made on one knowledge base, imported
into another that holds the same weights under another key and on the other backend (PostgreSQL -> SQLite when
the session runs on PostgreSQL, SQLite -> PostgreSQL when it runs on SQLite).

The renders are made through the worker's own code path (jobs.request, jobs.start, artifacts.store) with small
real PNGs, on the tiny test network (which no worker process knows)."""

import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import tiny
import torch
from conftest import BACKEND
from databases import fresh_databases

from kb.app.model_import import import_model
from kb.db.engine import engine_for
from kb.db.render_tables import artifact_table, render_job_table
from kb.render import artifacts, jobs
from kb.render.params import RenderParams
from kb.settings import Settings

OTHER = "sqlite" if BACKEND == "postgresql" else "postgresql"
SMALL = {"size": 32, "steps": 8}
FV = RenderParams(**SMALL).check("FEATURE_VIS").relevant("FEATURE_VIS")  # as requestRender stores them
REQUEST = """mutation($n: [String!], $p: RenderParamsInput) {
  requestRender(kind: FEATURE_VIS, neurons: $n, params: $p) { id status artifact { url } } }"""


def kb(env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run(
        [str(exe), *args], env={**os.environ, "KB_BROKER_URL": "", **env}, capture_output=True, text=True, timeout=300
    )


def render(engine, store: Path, model: str, sha: str, layer: str, units: list[int], kind: str) -> list[int]:
    """Jobs for these units, run as a worker runs them: claimed, then stored (PNGs of distinct pictures)."""
    params = RenderParams(**SMALL).check(kind).relevant(kind)  # as requestRender stores them
    with engine.begin() as conn:
        ids, _ = jobs.request(conn, [jobs.Unit(model, sha, layer, u) for u in units], kind, params)
        group = jobs.start(conn, ids, "test-worker@host", 60.0)
    rng = np.random.default_rng(zlib.crc32(f"{layer} {kind}".encode()))
    pictures = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in group]
    artifacts.store(engine, Settings(storage_dir=store, artifact_store="files", render_device="cpu"), group, pictures)
    return ids


def rows(engine) -> tuple[list, list]:
    with engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(sa.select(render_job_table).order_by(render_job_table.c.id))],
            [tuple(r) for r in conn.execute(sa.select(artifact_table).order_by(artifact_table.c.id))],
        )


def files(store: Path) -> set[str]:
    return {p.name for p in store.rglob("*") if p.is_file()} if store.exists() else set()


def page_images(engine, store: Path, path: str, token: str | None = None, mutation: dict | None = None):
    """The sha256s of the <img> sources on a page of a server on this database and artifact storage; each image
    fetched from it. With ``mutation``, also that GraphQL answer."""
    from starlette.testclient import TestClient

    from kb.web.app import create_app

    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, storage_dir=store, artifact_store="files"), engine=engine, warm=False)
    app.state.graphs.warm()
    with TestClient(app) as client:
        page = client.get(path)
        assert page.status_code == 200, page.text
        shas = re.findall(r'<img src="[^"]*/artifacts/([0-9a-f]{64})\.png"', page.text)
        images = {}
        for sha in shas:
            got = client.get(f"/artifacts/{sha}.png")
            assert got.status_code == 200
            images[sha] = got.content
        answer = None
        if mutation is not None:
            answer = client.post("/graphql", json=mutation, headers={"authorization": f"Bearer {token}"}).json()
    return shas, images, answer


@pytest.fixture(scope="module")
def source(engine, tiny_arch, tmp_path_factory):
    """The session's database with the tiny model rendered (once: jobs are per weights, whatever the key)."""
    key = f"tiny-src-{secrets.token_hex(3)}"
    # weights of its own (a checkpoint): renders belong to weights, and other modules render test:tiny's own
    net = tiny.build()
    with torch.no_grad():
        net.conv1.weight.mul_(3.0 + secrets.randbelow(10**6) / 10**6)
    weights = tmp_path_factory.mktemp("src-weights") / "tiny.pt"
    torch.save(net.state_dict(), weights)
    report = import_model(engine, "test:tiny", key=key, weights=str(weights))
    store = tmp_path_factory.mktemp("src-artifacts")
    done = render(engine, store, key, report.sha256, "c2", [0, 1], "FEATURE_VIS")
    done += render(engine, store, key, report.sha256, "mixed", [0, 1], "FEATURE_VIS")
    done += render(engine, store, key, report.sha256, "c2", [0], "WEIGHTS")
    with engine.begin() as conn:  # one more job, never run: not in the bundle
        jobs.request(conn, [jobs.Unit(key, report.sha256, "c1", 0)], "FEATURE_VIS", FV)
    env = {
        "KB_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "KB_STORAGE_DIR": str(store),
        "KB_ARTIFACT_STORE": "files",  # each knowledge base's own folder: what a refused import leaves is seen there
        "KB_DATA_DIR": str(tmp_path_factory.mktemp("src-data")),
    }
    return {
        "engine": engine,
        "env": env,
        "store": store,
        "key": key,
        "jobs": done,
        "sha256": report.sha256,
        "weights": str(weights),
    }


@pytest.fixture
def kbs(source, tmp_path, tmp_path_factory):
    """(source, target): the rendered source, and a new database of the other backend (with no model yet); each
    with its engine, artifact storage and kb environment."""
    with fresh_databases(tmp_path_factory) as make:
        dst_url = make(OTHER)
        dst_env = {
            "KB_DATABASE_URL": dst_url,
            "KB_STORAGE_DIR": str(tmp_path / "dst-artifacts"),
            "KB_ARTIFACT_STORE": "files",
            "KB_DATA_DIR": str(tmp_path / "dst-data"),
        }
        dst = {"engine": engine_for(dst_url), "env": dst_env, "store": tmp_path / "dst-artifacts"}
        yield {"src": source, "dst": dst, "sha256": source["sha256"]}


def corrupt_last_image(bundle: Path, out: Path) -> str:
    """A copy of the bundle with one byte of its last image flipped (the images before it are sound)."""
    with tarfile.open(bundle) as tar:
        last = [m for m in tar.getmembers() if m.name.startswith("images/")][-1]
    data = bytearray(bundle.read_bytes())
    data[last.offset_data + last.size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return last.name


def test_export_import_shows_the_same_pictures_and_requests_find_them(kbs, tmp_path):
    src, dst = kbs["src"], kbs["dst"]
    bundle = tmp_path / "tiny.kbrenders"
    r = kb(src["env"], "renders", "export", src["key"], "-o", str(bundle))
    assert r.returncode == 0, r.stderr
    assert re.search(rf"5 renders \(5 images\) of {src['key']}@{kbs['sha256'][:12]}", r.stdout), r.stdout
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and len(names) == 6
    only = tmp_path / "weights.kbrenders"
    r = kb(src["env"], "renders", "export", src["key"], "--kind", "weights", "-o", str(only))
    assert r.returncode == 0 and "1 renders (1 images)" in r.stdout, r.stdout + r.stderr

    # wrong weights: a model here under the source's very key, with other weights: refused in one line
    wrong = tmp_path / "other.pt"
    net = tiny.build()
    with torch.no_grad():
        net.conv1.weight.mul_(2.0)
    torch.save(net.state_dict(), wrong)
    import_model(dst["engine"], "test:tiny", key=src["key"], weights=str(wrong))
    r = kb(dst["env"], "renders", "import", str(bundle))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (
        r.stderr.startswith(f"error: this bundle is for weights {kbs['sha256'][:12]}") and "no model here" in r.stderr
    )
    assert rows(dst["engine"]) == ([], []) and files(dst["store"]) == set()

    # the same weights under another key: the bundle is for them
    dst_key = f"tiny-dst-{secrets.token_hex(3)}"
    import_model(dst["engine"], "test:tiny", key=dst_key, weights=src["weights"])

    # a corrupted image: refused, nothing written (the sound images before it are removed again)
    bad = tmp_path / "corrupt.kbrenders"
    name = corrupt_last_image(bundle, bad)
    r = kb(dst["env"], "renders", "import", str(bad))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: image {name[7:71]} is corrupted"), r.stderr
    assert rows(dst["engine"]) == ([], []) and files(dst["store"]) == set()

    # one of the bundle's renders already asked for here (queued, never run): the import finishes that job
    with dst["engine"].begin() as conn:
        (queued,), _ = jobs.request(conn, [jobs.Unit(dst_key, kbs["sha256"], "c2", 1)], "FEATURE_VIS", FV)
    r = kb(dst["env"], "renders", "import", str(bundle))
    assert r.returncode == 0, r.stderr
    assert "5 renders" in r.stdout and "4 new, 1 finished, 0 already here; 5 of 5 images new" in r.stdout, r.stdout
    print(f"bundle {bundle.stat().st_size} bytes; {r.stdout.strip()}")
    imported, stored = rows(dst["engine"]), files(dst["store"])
    assert len(imported[0]) == 5 and len(imported[1]) == 5 and len(stored) == 5
    with dst["engine"].connect() as conn:
        t = render_job_table
        assert set(conn.execute(sa.select(t.c.model_key, t.c.status)).all()) == {(dst_key, "DONE")}

    # twice: nothing changes
    r = kb(dst["env"], "renders", "import", str(bundle))
    assert r.returncode == 0 and "0 new, 0 finished, 5 already here; 0 of 5 images new" in r.stdout, r.stdout
    assert rows(dst["engine"]) == imported and files(dst["store"]) == stored

    # the pages show the same images; a request for an imported render answers its job, DONE, and sends nothing
    from kb.claims import accounts

    editor = f"ed-{secrets.token_hex(3)}"
    with dst["engine"].begin() as conn:
        accounts.create_user(conn, editor, "editor")
        token = accounts.create_token(conn, editor)
    here, here_images, _ = page_images(src["engine"], src["store"], f"/n/{src['key']}/c2/0")
    assert len(set(here)) == 4  # its FEATURE_VIS and WEIGHTS, and its two output units' cards
    there, there_images, answer = page_images(
        dst["engine"],
        dst["store"],
        f"/n/{dst_key}/c2/0",
        token,
        {"query": REQUEST, "variables": {"n": [f"{dst_key}/c2:1"], "p": SMALL}},
    )
    assert there == here and there_images == here_images
    (job,) = answer["data"]["requestRender"]
    with dst["engine"].connect() as conn:
        t = render_job_table
        want = conn.execute(
            sa.select(t.c.id, t.c.enqueued_at).where(t.c.layer_key == "c2", t.c.unit == 1, t.c.kind == "FEATURE_VIS")
        ).one()
        count = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    assert job["id"] == want.id == queued and job["status"] == "DONE" and job["artifact"]["url"].endswith(".png")
    assert want.enqueued_at is None and count == 5  # no new job, and none sent to a worker


def rewritten(bundle: Path, out: Path, change) -> Path:
    """A copy of the bundle whose manifest ``change`` edited in place; the images as they were."""
    with tarfile.open(bundle) as tar, tarfile.open(out, "w") as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
    return out


def _record(where: str, **values):
    def change(manifest):
        rec = next(r for r in manifest["records"] if f"{r['layer']}:{r['unit']} {r['kind']}" == where)
        for k, v in values.items():
            target = rec
            *path, last = k.split(".")
            for p in path:
                target = target[p]
            target[last] = v

    return change


BAD = [
    (_record("c2:0 WEIGHTS", kind="PAINTING"), "record 1: kind must be one of FEATURE_VIS"),
    (_record("mixed:1 FEATURE_VIS", unit=7), "record 4 (mixed:7 FEATURE_VIS): unit must be a whole number in 0..1"),
    (_record("c2:0 FEATURE_VIS", layer="c9"), "record 0: model {key} has no layer 'c9'"),
    (
        _record("c2:1 FEATURE_VIS", **{"params.size": 8, "artifact.params.size": 8}),
        "record 2 (c2:1 FEATURE_VIS): params: size must be 16..512 pixels",
    ),
    (
        _record("c2:1 FEATURE_VIS", **{"params.top_k": 3, "artifact.params.top_k": 3}),
        "record 2 (c2:1 FEATURE_VIS): params are not those a FEATURE_VIS request stores",
    ),
    (_record("c2:1 FEATURE_VIS", **{"artifact.width": 64}), "is not a 64x32 PNG as its record says"),
    (lambda m: m["records"].pop(), "belongs to no record"),  # its image is still in the bundle
]


def test_bad_records_are_refused_and_nothing_is_written(kbs, tmp_path):
    """Each record is checked against the model here (kind, layer, unit, parameters as requestRender stores them,
    the image it names); one bad record refuses the whole bundle, which writes no row and leaves no file."""
    from kb.render import bundles
    from kb.render.storage_files import LocalStorage

    src, dst = kbs["src"], kbs["dst"]
    bundle = tmp_path / "tiny.kbrenders"
    bundles.export(src["engine"], LocalStorage(src["store"]), src["key"], bundle)
    dst_key = f"tiny-dst-{secrets.token_hex(3)}"
    import_model(dst["engine"], "test:tiny", key=dst_key, weights=src["weights"])
    store = LocalStorage(dst["store"])
    for i, (change, message) in enumerate(BAD):
        bad = rewritten(bundle, tmp_path / f"bad-{i}.kbrenders", change)
        with pytest.raises(bundles.BundleProblem) as refused:
            bundles.import_bundle(dst["engine"], store, bad)
        assert message.format(key=dst_key) in str(refused.value), (i, str(refused.value))
        assert rows(dst["engine"]) == ([], []) and files(dst["store"]) == set(), i
    done = bundles.import_bundle(dst["engine"], store, bundle)
    assert (done.new_jobs, done.new_images) == (5, 5)
