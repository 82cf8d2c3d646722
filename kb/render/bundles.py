"""Render bundles: every finished render of one model version in one file, for another knowledge base.

A bundle is a tar file: ``manifest.json`` first (format, version, the model's key, source and weights sha256,
and one record per job: its unit (-1: a picture of the whole layer, DEEPDREAM or CARICATURE), kind, parameters,
job times and artifact row: versions, device, precision; and ``uploads``, the artifact rows of the images
editors uploaded as its caricatures' targets, kind UPLOAD, without who uploaded them), then each image once, as
``images/<sha256>.png``. Export streams the images from the artifact store (kb.render.storage) into the file
(written beside FILE, then renamed); import streams them back one at a time.

Import matches the bundle to a local model by its weights' sha256 (never by key: the same weights may have
another key here), checks every record against that model (kinds, layers and units that exist, parameters as
``requestRender`` would have stored them, so that asking for them again finds them) and every image's sha256,
writes the images (content-addressed: the same bytes are the same file), then every row in one transaction.
A refused import leaves nothing behind: no row, and no image in the store that was not there before. Importing a bundle
again changes nothing: jobs and artifacts are found by the same keys that ``requestRender`` and the worker use
(kb.render.jobs), and a job already DONE here keeps its own artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from kb.db.catalog import load_catalog
from kb.db.render_tables import artifact_table, render_job_table
from kb.db.tables import model_table, utcnow
from kb.errors import Problem
from kb.graph.keys import ModelRef
from kb.render.jobs import LAYER_UNIT
from kb.render.params import ALL_KINDS, LAYER_KINDS, RenderParams, params_hash
from kb.render.storage import ArtifactStore
from kb.render.uploads import KIND as UPLOAD
from kb.render.uploads import MAX_SIDE

FORMAT = "circuit-kb render bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 512 * 2**20
MAX_IMAGE_BYTES = 64 * 2**20
SHA = re.compile(r"[0-9a-f]{64}")
IMAGE_NAME = re.compile(r"images/([0-9a-f]{64})\.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARTIFACT_FIELDS = ("sha256", "content_type", "bytes", "width", "height", "kind", "params", "versions", "meta")
JOB_TIMES = ("created_at", "started_at", "finished_at")


class BundleProblem(Problem):
    code = "BAD_INPUT"


@dataclass
class Exported:
    model: str
    sha256: str
    records: int
    images: int
    bytes: int


@dataclass
class Imported:
    model: str
    sha256: str
    records: int
    images: int
    new_images: int = 0
    new_jobs: int = 0
    finished_jobs: int = 0  # jobs here that were not DONE (queued, failed...) and are now, with the bundle's image
    already: int = 0  # jobs already DONE here: left as they are
    new_artifacts: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- export


def _iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC (SQLite hands back naive UTC times)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _model(conn: sa.Connection, name: str) -> tuple[ModelRef, str]:
    """(the model named, its source)."""
    m = load_catalog(conn).model(name)
    source = conn.execute(sa.select(model_table.c.source).where(model_table.c.key == m.key)).scalar_one()
    return m, source


def records_of(conn: sa.Connection, model_sha256: str, kinds: list[str] | None = None) -> list[dict[str, Any]]:
    """One record per finished job of these weights (with its artifact row), by layer, unit, kind, job."""
    t, a = render_job_table, artifact_table
    q = (
        sa.select(
            t.c.layer_key,
            t.c.unit,
            t.c.kind,
            t.c.params,
            t.c.params_hash,
            t.c.attempts,
            t.c.worker,
            t.c.created_at,
            t.c.started_at,
            t.c.finished_at,
            *(a.c[f].label(f"a_{f}") for f in ARTIFACT_FIELDS),
            a.c.created_at.label("a_created_at"),
        )
        .join(a, a.c.id == t.c.artifact_id)
        .where(t.c.model_sha256 == model_sha256, t.c.status == "DONE")
        .order_by(t.c.layer_key, t.c.unit, t.c.kind, t.c.id)
    )
    if kinds:
        q = q.where(t.c.kind.in_(kinds))
    out = []
    for r in conn.execute(q):
        artifact = {f: getattr(r, f"a_{f}") for f in ARTIFACT_FIELDS}
        artifact["created_at"] = _iso(r.a_created_at)
        out.append(
            {
                "layer": r.layer_key,
                "unit": r.unit,
                "kind": r.kind,
                "params": r.params,
                "params_hash": r.params_hash,
                "job": {
                    "attempts": r.attempts,
                    "worker": r.worker,
                    **{k: _iso(getattr(r, k)) for k in JOB_TIMES},
                },
                "artifact": artifact,
            }
        )
    return out


def uploads_of(conn: sa.Connection, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The uploaded images the records' caricatures are of (their artifact rows; not who uploaded them: an
    account id means nothing in another knowledge base)."""
    shas = sorted({r["params"]["upload"] for r in records if r["kind"] == "CARICATURE" and r["params"].get("upload")})
    if not shas:
        return []
    a = artifact_table
    rows = conn.execute(
        sa.select(*(a.c[f] for f in ARTIFACT_FIELDS), a.c.created_at).where(a.c.sha256.in_(shas), a.c.kind == UPLOAD)
    )
    out = []
    for r in rows:
        row = {f: getattr(r, f) for f in ARTIFACT_FIELDS}
        row["meta"] = {k: v for k, v in (row["meta"] or {}).items() if k != "uploaded_by"}
        row["created_at"] = _iso(r.created_at)
        out.append(row)
    missing = set(shas) - {u["sha256"] for u in out}
    if missing:
        raise BundleProblem(f"the uploaded image {sorted(missing)[0]} of a caricature has no row here")
    return sorted(out, key=lambda u: u["sha256"])


def export(
    engine: sa.Engine, storage: ArtifactStore, model: str, out: Path, kinds: list[str] | None = None
) -> Exported:
    """Write every finished render of MODEL (of these kinds) to ``out``: replaced only once it is complete."""
    for k in kinds or []:
        if k not in ALL_KINDS:
            raise BundleProblem(f"kind must be one of {', '.join(ALL_KINDS)}, not {k!r}")
    with engine.connect() as conn:
        m, source = _model(conn, model)
        records = records_of(conn, m.sha256, kinds)
        uploads = uploads_of(conn, records)
    images = sorted({r["artifact"]["sha256"] for r in records} | {u["sha256"] for u in uploads})
    for sha in images:  # before writing anything: a store that lost an image is said at once
        if not storage.exists(sha, ".png"):
            raise BundleProblem(f"image {sha} of {m.key} is missing from the artifact store ({storage.where})")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"key": m.key, "source": source, "weights_sha256": m.sha256},
        "weights_sha256": m.sha256,
        "exported_at": _iso(utcnow()),
        "images": len(images),
        "records": records,
        "uploads": uploads,
    }
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    out = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-bundle-", dir=out.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, io.BytesIO(body), len(body))
            for sha in images:
                data = storage.read(sha, ".png")  # one image in memory at a time
                if hashlib.sha256(data).hexdigest() != sha:
                    raise BundleProblem(
                        f"image {sha} in the artifact store does not hash to its name ({storage.where})"
                    )
                _add(tar, f"images/{sha}.png", io.BytesIO(data), len(data))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Exported(m.key, m.sha256, len(records), len(images), out.stat().st_size)


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    tar.addfile(info, data)


# ----------------------------------------------------------------------------------------------------- import


def _members(path: Path) -> Generator[tuple[str, IO[bytes], int]]:
    """(name, reader, size) of each member in order, read as a stream (gzip or not); only plain files."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    raise BundleProblem(f"{path} is not a render bundle: {member.name!r} is not a plain file")
                reader = tar.extractfile(member)
                assert reader is not None  # a plain file always has one
                yield member.name, reader, member.size
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleProblem(f"{path} is not a readable render bundle ({type(exc).__name__}: {exc})") from None


def _read(reader: IO[bytes], path: Path) -> bytes:
    try:
        return reader.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleProblem(f"{path} is not a readable render bundle ({type(exc).__name__}: {exc})") from None


def _read_manifest(path: Path, members: Iterator[tuple[str, IO[bytes], int]]) -> dict[str, Any]:
    first = next(members, None)
    if first is None or first[0] != MANIFEST:
        raise BundleProblem(f"{path} is not a render bundle: it does not start with {MANIFEST}")
    _, reader, size = first
    if size > MAX_MANIFEST_BYTES:
        raise BundleProblem(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
    try:
        manifest = json.loads(_read(reader, path))
    except ValueError as exc:
        raise BundleProblem(f"{path}: {MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleProblem(f"{path} is not a render bundle (format {FORMAT!r} expected)")
    if manifest.get("version") != VERSION:
        raise BundleProblem(f"{path} is a version {manifest.get('version')!r} bundle; this kb reads version {VERSION}")
    if not isinstance(manifest.get("weights_sha256"), str) or not SHA.fullmatch(manifest["weights_sha256"]):
        raise BundleProblem(f"{path}: weights_sha256 is not a sha256")
    if not isinstance(manifest.get("records"), list):
        raise BundleProblem(f"{path}: records is not a list")
    return manifest


def model_for_weights(conn: sa.Connection, sha256: str, said: dict[str, Any]) -> ModelRef:
    """The local model with these weights (by hash, whatever its key); refused in one line when none has them."""
    found = [m for m in load_catalog(conn).models.values() if m.sha256 == sha256 and not m.removed]
    if not found:
        named = f"{said.get('key')} from {said.get('source')}, " if isinstance(said, dict) else ""
        raise BundleProblem(
            f"this bundle is for weights {sha256[:12]} ({named}sha256 {sha256}) and no model here has them: "
            f"import those weights first; nothing was imported"
        )
    return sorted(found, key=lambda m: m.key)[0]


def _when(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BundleProblem(f"{what} is not an ISO time: {value!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BundleProblem(f"{what} must be a whole number in {lo}..{hi}, not {value!r}")
    return value


def check_record(i: int, rec: Any, m: ModelRef) -> dict[str, Any]:
    """The record as rows to write; BundleProblem naming the record if anything in it is wrong."""
    where = f"record {i}"
    if not isinstance(rec, dict):
        raise BundleProblem(f"{where} is not an object")
    kind, layer, unit, params = rec.get("kind"), rec.get("layer"), rec.get("unit"), rec.get("params")
    if kind not in ALL_KINDS:
        raise BundleProblem(f"{where}: kind must be one of {', '.join(ALL_KINDS)}, not {kind!r}")
    units = {lr.key: lr.units for lr in m.layers}
    if layer not in units:
        raise BundleProblem(f"{where}: model {m.key} has no layer {layer!r}")
    where = f"record {i} ({layer}:{unit} {kind})"
    if kind in LAYER_KINDS:  # a picture of the whole layer
        _int(unit, f"{where}: unit (of a whole layer's {kind})", LAYER_UNIT, LAYER_UNIT)
    else:
        _int(unit, f"{where}: unit", 0, units[layer] - 1)
    if not isinstance(params, dict):
        raise BundleProblem(f"{where}: params is not an object")
    try:
        canonical = RenderParams(**params).check(kind).relevant(kind)
    except TypeError as exc:
        raise BundleProblem(f"{where}: params: {exc}") from None
    except Problem as exc:
        raise BundleProblem(f"{where}: params: {exc}") from None
    if canonical != params:  # as requestRender stores them: anything else would never be asked for again
        raise BundleProblem(f"{where}: params are not those a {kind} request stores: {params!r}")
    h = params_hash(kind, params)
    if rec.get("params_hash") not in (None, h):
        raise BundleProblem(f"{where}: params_hash does not match its params")
    art = rec.get("artifact")
    if not isinstance(art, dict):
        raise BundleProblem(f"{where}: artifact is not an object")
    sha = art.get("sha256")
    if not isinstance(sha, str) or not SHA.fullmatch(sha):
        raise BundleProblem(f"{where}: artifact sha256 is not a sha256")
    if art.get("content_type") != "image/png":
        raise BundleProblem(f"{where}: artifact content_type must be image/png")
    if art.get("kind") != kind or art.get("params") != params:
        raise BundleProblem(f"{where}: the artifact's kind and params are not the job's")
    for f in ("versions", "meta"):
        if not isinstance(art.get(f), dict):
            raise BundleProblem(f"{where}: artifact {f} is not an object")
    artifact = {
        "sha256": sha,
        "content_type": "image/png",
        "bytes": _int(art.get("bytes"), f"{where}: artifact bytes", 1, MAX_IMAGE_BYTES),
        "width": _int(art.get("width"), f"{where}: artifact width", 1, 65535),
        "height": _int(art.get("height"), f"{where}: artifact height", 1, 65535),
        "kind": kind,
        "params": params,
        "versions": art["versions"],
        "meta": art["meta"],
        "created_at": _when(art.get("created_at"), f"{where}: artifact created_at") or utcnow(),
    }
    job = rec.get("job") or {}
    if not isinstance(job, dict):
        raise BundleProblem(f"{where}: job is not an object")
    worker = job.get("worker")
    if worker is not None and not isinstance(worker, str):
        raise BundleProblem(f"{where}: job worker is not text")
    times = {k: _when(job.get(k), f"{where}: job {k}") for k in JOB_TIMES}
    return {
        "key": (layer, unit, kind, h),
        "artifact": artifact,
        "job": {
            "kind": kind,
            "model_key": m.key,
            "model_sha256": m.sha256,
            "layer_key": layer,
            "unit": unit,
            "params": params,
            "params_hash": h,
            "attempts": _int(job.get("attempts", 1), f"{where}: job attempts", 0, 1000),
            "worker": worker[:200] if worker else None,
            "created_at": times["created_at"] or utcnow(),
            "started_at": times["started_at"],
            "finished_at": times["finished_at"] or utcnow(),
        },
    }


def check_upload(i: int, up: Any) -> dict[str, Any]:
    """An uploaded image's artifact row as the bundle carries it (kind UPLOAD, no parameters)."""
    where = f"upload {i}"
    if not isinstance(up, dict):
        raise BundleProblem(f"{where} is not an object")
    sha = up.get("sha256")
    if not isinstance(sha, str) or not SHA.fullmatch(sha):
        raise BundleProblem(f"{where}: sha256 is not a sha256")
    if up.get("content_type") != "image/png" or up.get("kind") != UPLOAD or up.get("params") != {}:
        raise BundleProblem(f"{where}: not an uploaded image's row (an image/png of kind {UPLOAD}, no params)")
    for f in ("versions", "meta"):
        if not isinstance(up.get(f), dict):
            raise BundleProblem(f"{where}: {f} is not an object")
    return {
        "sha256": sha,
        "content_type": "image/png",
        "bytes": _int(up.get("bytes"), f"{where}: bytes", 1, MAX_IMAGE_BYTES),
        "width": _int(up.get("width"), f"{where}: width", 1, MAX_SIDE),
        "height": _int(up.get("height"), f"{where}: height", 1, MAX_SIDE),
        "kind": UPLOAD,
        "params": {},
        "versions": up["versions"],
        "meta": {k: v for k, v in up["meta"].items() if k != "uploaded_by"},
        "created_at": _when(up.get("created_at"), f"{where}: created_at") or utcnow(),
    }


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None if the bytes do not start as a PNG."""
    if len(data) < 24 or not data.startswith(PNG_MAGIC) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _store_images(
    path: Path,
    members: Iterator[tuple[str, IO[bytes], int]],
    storage: ArtifactStore,
    wanted: dict[str, dict[str, Any]],
    created: list[str],
) -> int:
    """Check and store each image (one in memory at a time); appends to ``created`` the images that were not
    in the store before. Returns the images read."""
    seen: set[str] = set()
    for name, reader, size in members:
        match = IMAGE_NAME.fullmatch(name)
        if match is None:
            raise BundleProblem(f"{path}: unexpected member {name!r} (only images/<sha256>.png follow {MANIFEST})")
        sha = match.group(1)
        if sha not in wanted:
            raise BundleProblem(f"{path}: image {sha} belongs to no record")
        if sha in seen:
            raise BundleProblem(f"{path}: image {sha} appears twice")
        art = wanted[sha]
        if size != art["bytes"]:
            raise BundleProblem(f"image {sha}: {size} bytes, its record says {art['bytes']}")
        data = _read(reader, path)
        if hashlib.sha256(data).hexdigest() != sha:
            raise BundleProblem(f"image {sha} is corrupted: its bytes do not hash to its sha256")
        if _png_size(data) != (art["width"], art["height"]):
            raise BundleProblem(f"image {sha} is not a {art['width']}x{art['height']} PNG as its record says")
        seen.add(sha)
        if storage.exists(sha, ".png"):
            continue
        storage.put(data, ".png")
        created.append(sha)
    missing = set(wanted) - seen
    if missing:
        raise BundleProblem(f"{path}: {len(missing)} images of its records are missing, e.g. {sorted(missing)[0]}")
    return len(seen)


def _write_rows(conn: sa.Connection, rows: list[dict[str, Any]], report: Imported) -> None:
    """Artifacts by content hash and jobs by (weights, layer, unit, kind, params hash): the keys the worker and
    requestRender use, so a second import finds everything and a request finds the imported job."""
    a, t = artifact_table, render_job_table
    artifact_ids: dict[str, int] = {}
    for row in rows:
        art = row["artifact"]
        sha = art["sha256"]
        if sha not in artifact_ids:
            found = conn.execute(sa.select(a.c.id).where(a.c.sha256 == sha)).scalar()
            if found is None:
                found = conn.execute(sa.insert(a).values(**art).returning(a.c.id)).scalar_one()
                report.new_artifacts += 1
            artifact_ids[sha] = found
        job = row["job"]
        key = (
            t.c.model_sha256 == job["model_sha256"],
            t.c.layer_key == job["layer_key"],
            t.c.unit == job["unit"],
            t.c.kind == job["kind"],
            t.c.params_hash == job["params_hash"],
        )
        done = {
            "status": "DONE",
            "artifact_id": artifact_ids[sha],
            "progress": 1.0,
            "error": None,
            "deadline": None,
            "next_attempt_at": None,
            "finished_at": job["finished_at"],
        }
        existing = conn.execute(sa.select(t.c.id, t.c.status).where(*key)).first()
        if existing is None:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(t).values({**job, **done}))
                report.new_jobs += 1
                continue
            except sa.exc.IntegrityError:  # asked for at this moment by someone here: theirs, finished below
                existing = conn.execute(sa.select(t.c.id, t.c.status).where(*key)).one()
        if existing.status == "DONE":
            report.already += 1
            continue
        # queued, running or failed here: finished now with the bundle's image (a worker's late result lands
        # nowhere: its finish needs the job RUNNING)
        landed = conn.execute(sa.update(t).where(t.c.id == existing.id, t.c.status != "DONE").values(**done)).rowcount
        if landed:
            report.finished_jobs += 1
        else:
            report.already += 1


def _write_uploads(conn: sa.Connection, uploads: list[dict[str, Any]], report: Imported) -> None:
    """The caricatures' uploaded images, by content hash (one here already is kept as it is)."""
    a = artifact_table
    for up in uploads:
        found = conn.execute(sa.select(a.c.kind).where(a.c.sha256 == up["sha256"])).scalar()
        if found is None:
            conn.execute(sa.insert(a).values(**up))
            report.new_artifacts += 1
        elif found != UPLOAD:
            raise BundleProblem(f"upload {up['sha256']} is a rendered image here, not an uploaded one")


def _forget(storage: ArtifactStore, engine: sa.Engine, created: list[str]) -> None:
    """Remove the images this import stored, unless a row here has come to use one meanwhile."""
    if not created:
        return
    with engine.connect() as conn:
        used = set(
            conn.execute(sa.select(artifact_table.c.sha256).where(artifact_table.c.sha256.in_(created))).scalars()
        )
    for sha in created:
        if sha not in used:
            storage.delete(sha, ".png")


def import_bundle(engine: sa.Engine, storage: ArtifactStore, path: Path) -> Imported:
    """Check the bundle (weights, every record, every image), then write all of it or nothing."""
    started = time.perf_counter()
    path = Path(path)
    members = _members(path)
    created: list[str] = []
    try:
        manifest = _read_manifest(path, members)
        with engine.connect() as conn:
            m = model_for_weights(conn, manifest["weights_sha256"], manifest.get("model") or {})
        rows = [check_record(i, rec, m) for i, rec in enumerate(manifest["records"])]
        keys = [r["key"] for r in rows]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise BundleProblem(f"two records for {dup[0]}:{dup[1]} {dup[2]} with the same parameters")
        raw_uploads = manifest.get("uploads", [])
        if not isinstance(raw_uploads, list):
            raise BundleProblem(f"{path}: uploads is not a list")
        uploads = [check_upload(i, u) for i, u in enumerate(raw_uploads)]
        carried = {u["sha256"] for u in uploads}
        for r in rows:
            target = r["job"]["params"].get("upload")
            if target and target not in carried:
                raise BundleProblem(f"a caricature's uploaded image {target} is not in the bundle's uploads")
        wanted: dict[str, dict[str, Any]] = {}
        for r in [*rows, *({"artifact": u} for u in uploads)]:
            art = r["artifact"]
            other = wanted.setdefault(art["sha256"], art)
            if (other["bytes"], other["width"], other["height"]) != (art["bytes"], art["width"], art["height"]):
                raise BundleProblem(f"image {art['sha256']}: its records disagree about its size")
        report = Imported(m.key, m.sha256, len(rows), 0)
        report.images = _store_images(path, members, storage, wanted, created)
        report.new_images = len(created)
        with engine.begin() as conn:  # all the rows or none
            _write_uploads(conn, uploads, report)
            _write_rows(conn, rows, report)
    except BaseException:
        _forget(storage, engine, created)
        raise
    finally:
        members.close()
    for r in rows:
        report.kinds[r["job"]["kind"]] = report.kinds.get(r["job"]["kind"], 0) + 1
    report.seconds = time.perf_counter() - started
    return report
