"""Images editors upload as caricature targets: checked as hostile content, re-encoded, stored once.

``store_upload`` is the one function the upload route, the layer page's form and ``kb render --image-file`` go
through. The bytes are refused (nothing written) when they are over ``KB_UPLOAD_MAX_BYTES`` (TOO_LARGE), not an
image of a format named in ``FORMATS`` (BAD_INPUT), or more than ``KB_UPLOAD_MAX_PIXELS`` pixels, read from the
header before anything is decoded (TOO_LARGE: a decompression bomb costs nothing). What is kept is not what was
sent: the first frame's pixels, as RGB (transparency over white), at most ``MAX_SIDE`` px on the longer side, in
a PNG this code encodes (no metadata, no colour profile, no text chunks). It is stored content-addressed by that
PNG's sha256, as an artifact row of kind ``UPLOAD`` (the same table and storage as the renders, served only as
``/artifacts/<sha256>.png``, image/png): uploading the same picture again returns the same row. A CARICATURE
names it by that sha256 (``RenderParams.upload``), so the job's idempotency key includes it.

Torch-free: the API process runs it.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from PIL import Image, UnidentifiedImageError

from kb.db.render_tables import artifact_table
from kb.db.tables import utcnow
from kb.errors import Problem
from kb.render.storage import ArtifactMissing, ArtifactStore
from kb.settings import Settings

if TYPE_CHECKING:
    import numpy as np

KIND = "UPLOAD"  # the artifact row's kind
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # what Pillow may read an upload as: nothing else is parsed
MAX_SIDE = 1024  # the stored image's longer side at most (caricatures are 512 px at most)


class UploadProblem(Problem):
    code = "BAD_INPUT"


class TooLarge(UploadProblem):
    code = "TOO_LARGE"


class UploadNotFound(UploadProblem):
    code = "NOT_FOUND"


@dataclass(frozen=True)
class Upload:
    id: int
    sha256: str
    width: int
    height: int
    bytes: int
    new: bool = False  # stored by this call (False: the same picture was there already)

    @property
    def path(self) -> str:
        return f"/artifacts/{self.sha256}.png"


def normalise(data: bytes, max_bytes: int, max_pixels: int) -> tuple[bytes, int, int, str]:
    """(PNG bytes, width, height, the format it came as): the checks above, then the re-encoding. Raises
    UploadProblem; never writes anything."""
    if not data:
        raise UploadProblem("the upload is empty: send an image (PNG, JPEG, GIF, WebP or BMP)")
    if len(data) > max_bytes:
        raise TooLarge(f"the image is {len(data)} bytes: at most {max_bytes} (KB_UPLOAD_MAX_BYTES)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:  # reads the header only
                fmt = im.format or "?"
                w, h = im.size
                if w < 1 or h < 1:
                    raise UploadProblem(f"the image is {w}x{h} pixels")
                if w * h > max_pixels:
                    raise TooLarge(
                        f"the image is {w}x{h} = {w * h} pixels: at most {max_pixels} (KB_UPLOAD_MAX_PIXELS)"
                    )
                im.seek(0)  # an animation: its first frame
                im.load()
                rgb = _rgb(im)
    except UploadProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"the image has too many pixels: at most {max_pixels} (KB_UPLOAD_MAX_PIXELS)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError):
        raise UploadProblem(
            f"not an image this knowledge base reads ({', '.join(FORMATS)}), or a damaged one"
        ) from None
    if max(rgb.size) > MAX_SIDE:
        s = MAX_SIDE / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * s)), max(1, round(rgb.height * s))), Image.Resampling.LANCZOS)
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())  # pixels only: no info, profile or chunks carried
    buf = io.BytesIO()
    clean.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue(), clean.width, clean.height, fmt


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def store_upload(engine: sa.Engine, storage: ArtifactStore, settings: Settings, data: bytes, by: int | None) -> Upload:
    """Check and re-encode ``data`` (``normalise``), then store it once: the image (atomically, in the artifact
    store) and its row. The same picture again returns the row there is. On any failure nothing this call wrote
    is left behind."""
    png, width, height, fmt = normalise(data, settings.upload_max_bytes, settings.upload_max_pixels)
    sha = hashlib.sha256(png).hexdigest()
    found = find_upload(engine, sha)
    if found is not None:
        if not storage.exists(sha, ".png"):  # the row outlived its image: put the image back
            storage.put(png, ".png")
        return found
    had_file = storage.exists(sha, ".png")
    a = artifact_table
    row = {
        "sha256": sha,
        "content_type": "image/png",
        "bytes": len(png),
        "width": width,
        "height": height,
        "kind": KIND,
        "params": {},
        "versions": {},
        "meta": {"uploaded_by": by, "format": fmt, "sent_bytes": len(data)},
    }
    try:
        storage.put(png, ".png")
        with engine.begin() as conn:
            try:
                with conn.begin_nested():
                    new_id = conn.execute(
                        sa.insert(a).values(created_at=utcnow(), **row).returning(a.c.id)
                    ).scalar_one()
                return Upload(new_id, sha, width, height, len(png), new=True)
            except sa.exc.IntegrityError:  # uploaded at this moment by someone else: theirs
                pass
        found = find_upload(engine, sha)
        if found is None:
            raise UploadProblem(f"an image {sha} is stored here already, but not as an upload")
        return found
    except BaseException:
        if not had_file and find_upload(engine, sha) is None:
            storage.delete(sha, ".png")
        raise


def find_upload(engine_or_conn: sa.Engine | sa.Connection, sha256: str) -> Upload | None:
    """The uploaded image with this sha256, or None (also for a rendered image: only uploads are targets)."""
    a = artifact_table
    q = sa.select(a.c.id, a.c.sha256, a.c.width, a.c.height, a.c.bytes, a.c.kind).where(a.c.sha256 == sha256)
    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            r = conn.execute(q).first()
    else:
        r = engine_or_conn.execute(q).first()
    if r is None or r.kind != KIND:
        return None
    return Upload(r.id, r.sha256, r.width, r.height, r.bytes)


def upload_rgb(storage: ArtifactStore, sha256: str, size: int) -> np.ndarray | None:
    """The stored upload as the caricature's target: shorter side resized to ``size``, centre crop (HxWx3
    uint8), as a dataset's images are; None if it is missing from the store or unreadable."""
    from kb.render.dataset_examples import load  # torch: the worker's side only

    try:
        data = storage.read(sha256, ".png")
    except ArtifactMissing:
        return None
    return load(io.BytesIO(data), size)
