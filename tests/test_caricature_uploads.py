"""Caricatures of an image an editor uploads (issue 24, item 5): hostile bytes refused before they are decoded or
stored, the rest re-encoded as a PNG of its pixels and stored once by its sha256; POST /uploads (editors only, coded
errors), the layer page's form (CSRF), `kb render --image-file`, requestLayerRender with params.upload (the job's
key includes the sha256), a real worker, Layer.views' source, the layer page, render bundles carrying the image,
and in Chromium an editor uploading on the layer page until the caricature shows."""

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import as_user, gql
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from stores import store_for

from kb.render import uploads as U
from kb.render.storage_files import LocalStorage
from kb.settings import Settings, get_settings

REQUEST = """mutation($layer: String!, $p: RenderParamsInput) {
    requestLayerRender(kind: CARICATURE, layer: $layer, params: $p) { id status params } }"""
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}
CAP = Settings().upload_max_bytes


def _png(rgb: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", **save)
    return buf.getvalue()


def _picture(seed: int, size=(40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------------ the bytes (no services)


def test_hostile_bytes_are_refused_before_decoding_with_codes():
    for data, code, says in (
        (b"", "BAD_INPUT", "empty"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "BAD_INPUT", "not an image"),
        (b"<html><body>hi</body></html>", "BAD_INPUT", "not an image"),
        (_png(_picture(1))[:60], "BAD_INPUT", "damaged"),  # truncated
        (b"GIF89a" + b"\0" * 20, "BAD_INPUT", "not an image"),
        (_header_only_png(5000, 5000), "TOO_LARGE", "25000000 pixels"),  # over KB_UPLOAD_MAX_PIXELS
        (_header_only_png(60000, 60000), "TOO_LARGE", "pixels"),  # over Pillow's own bomb limit too
        (b"\x89PNG" + b"\0" * (CAP + 1), "TOO_LARGE", "KB_UPLOAD_MAX_BYTES"),
    ):
        with pytest.raises(U.UploadProblem) as err:
            U.normalise(data, CAP, Settings().upload_max_pixels)
        assert err.value.code == code and says in err.value.message, (data[:20], err.value.message)


def test_what_is_kept_is_a_png_of_the_pixels_only():
    rgb = _picture(2)
    jpeg = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "<script>alert(1)</script>"  # ImageDescription
    Image.fromarray(rgb).save(jpeg, format="JPEG", quality=95, exif=exif.tobytes())
    png, w, h, fmt = U.normalise(jpeg.getvalue(), CAP, 10**6)
    assert png.startswith(b"\x89PNG") and (w, h, fmt) == (40, 30, "JPEG")
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.mode == "RGB" and not {"exif", "icc_profile"} & set(im.info)
    # a PNG with a text chunk and transparency: the chunk dropped, transparent pixels over white
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    info = PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    png2, *_ = U.normalise(_png(rgba, pnginfo=info), CAP, 10**6)
    assert b"script" not in png2 and b"tEXt" not in png2
    with Image.open(io.BytesIO(png2)) as im:
        assert im.getpixel((0, 0)) == (255, 255, 255)
    # the same picture, the same bytes (so the same sha256); a huge one is kept at most MAX_SIDE px
    assert U.normalise(jpeg.getvalue(), CAP, 10**6)[0] == png
    _, w, h, _ = U.normalise(_png(np.zeros((300, 2400, 3), dtype=np.uint8)), CAP, 10**7)
    assert (w, h) == (U.MAX_SIDE, 128)


def test_the_form_reader_is_strict():
    from kb.web import multipart as M

    ctype = "multipart/form-data; boundary=XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="csrf"\r\n\r\ntok\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: text/html\r\n\r\n'
        b"\x89PNG\r\n--\r\n\r\n--XyZ--\r\n"
    )
    parts = M.parse(body, ctype)
    assert M.text(parts, "csrf") == "tok" and parts["image"].data == b"\x89PNG\r\n--\r\n" and parts["image"].filename
    for bad in (
        body.replace(b"--XyZ--", b"--XyZ"),  # no closing boundary
        body.replace(b'name="csrf"', b'name="image"'),  # a name twice
        body.replace(b"Content-Disposition: form-data; ", b"X: "),  # no disposition
        b"junk" + body,
    ):
        with pytest.raises(M.BadMultipart):
            M.parse(bad, ctype)
    with pytest.raises(M.BadMultipart):
        M.parse(body, "multipart/form-data")  # no boundary
    with pytest.raises(M.BadMultipart):
        M.text(parts, "image")  # a file is no text field


# ------------------------------------------------------------------------------- the API, on both databases


def _upload(api, token: str | None, data: bytes, status: int) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = api.post("/uploads", content=data, headers={**headers, "content-type": "image/png"})
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def _counts(engine) -> tuple[int, int]:
    """(upload rows, images in the server's artifact store)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM artifact WHERE kind = 'UPLOAD'")).scalar_one()
        store = store_for(engine)
        if isinstance(store, LocalStorage):
            return rows, sum(1 for _ in store.root.rglob("*.png")) if store.root.exists() else 0
        return rows, conn.execute(sa.text("SELECT count(*) FROM artifact_blob")).scalar_one()


def test_post_uploads_roles_codes_and_idempotence(api, accounts, engine):
    ed = accounts["editor"]["token"]
    note = PngInfo()
    note.add_text("Comment", "<html><script>alert(1)</script></html>")
    data = _png(_picture(10), pnginfo=note)
    before = _counts(engine)
    for token, status, code in ((None, 401, "UNAUTHENTICATED"), (accounts["viewer"]["token"], 403, "FORBIDDEN")):
        err = _upload(api, token, data, status)["errors"][0]
        assert err["extensions"]["code"] == code, err
    for bad, status, code in (
        (b"<svg/>", 400, "BAD_INPUT"),
        (_header_only_png(8000, 8000), 413, "TOO_LARGE"),
        (b"\x89PNG" + b"\0" * (CAP + 1), 413, "TOO_LARGE"),  # over the cap: refused before the body is read
    ):
        err = _upload(api, ed, bad, status)["errors"][0]
        assert err["extensions"]["code"] == code, err
    assert _counts(engine) == before  # nothing of a refused upload is left: no row, no file
    first = _upload(api, ed, data, 201)["upload"]
    again = _upload(api, accounts["editor2"]["token"], data, 200)["upload"]  # the same picture, by another
    assert first["sha256"] == again["sha256"] and first["new"] and not again["new"]
    assert (first["width"], first["height"]) == (40, 30) and first["url"].endswith(f"/artifacts/{first['sha256']}.png")
    rows, files = _counts(engine)
    assert rows == before[0] + 1 and files == before[1] + 1
    served = api.get(f"/artifacts/{first['sha256']}.png")  # served as the PNG it became, never as it was sent
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"
    assert served.content[:4] == b"\x89PNG" and served.content != data and b"script" not in served.content


def test_caricature_jobs_are_keyed_by_the_images_sha256(api, accounts):
    ed = accounts["editor"]["token"]
    a = _upload(api, ed, _png(_picture(11)), 201)["upload"]["sha256"]
    b = _upload(api, ed, _png(_picture(12)), 201)["upload"]["sha256"]

    def ask(p):
        return as_user(api, ed, REQUEST, {"layer": "InceptionV1 3a", "p": p})

    ja = ask({**SMALL, "upload": a})["data"]["requestLayerRender"]
    assert ask({**SMALL, "upload": a})["data"]["requestLayerRender"]["id"] == ja["id"]
    jb = ask({**SMALL, "upload": b})["data"]["requestLayerRender"]
    assert jb["id"] != ja["id"] and f'"upload": "{a}"' in ja["params"] and '"dataset"' not in ja["params"]
    for p, code, says in (
        ({**SMALL, "upload": "f" * 64}, "NOT_FOUND", "no uploaded image"),
        ({**SMALL, "upload": "../etc/passwd"}, "BAD_INPUT", "sha256"),
        ({**SMALL, "upload": a, "dataset": "x", "image": 0}, "BAD_INPUT", "either"),
    ):
        err = ask(p)["errors"][0]
        assert err["extensions"]["code"] == code and says in err["message"], (p, err)
    # a rendered image is no upload: it cannot be named as one
    err = as_user(api, accounts["viewer"]["token"], REQUEST, {"layer": "InceptionV1 3a", "p": {"upload": a}})
    assert err["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_the_page_form_needs_its_csrf_token_and_an_editor(engine, inceptionv1):
    from test_annotate_web import ORIGIN, csrf, signed_in
    from test_render_forms import _app

    from kb.claims import accounts as acc
    from kb.claims import sessions

    app = _app(engine)
    names = {}
    with engine.begin() as conn:
        for who, role in (("amy", "editor"), ("vic", "viewer")):
            names[who] = f"cu-{who}-{os.getpid()}-{time.time_ns() % 10**6}"
            acc.create_user(conn, names[who], role)
            sessions.set_password(conn, names[who], "correct horse battery")
    amy, vic = signed_in(app, names["amy"]), signed_in(app, names["vic"])
    path = "/n/inceptionv1/mixed3a/caricature"
    image = {"image": ("a.png", _png(_picture(13)), "text/html")}  # the type the client says is not believed
    json_ = {**ORIGIN, "accept": "application/json"}
    before = _counts(engine)
    assert amy.post(path, files=image, data={"csrf": "wrong"}, headers=ORIGIN).status_code == 403
    assert amy.post(path, files=image, data={"csrf": csrf(amy)}).status_code == 403  # no Origin: not this site's
    r = vic.post(path, files=image, data={"csrf": csrf(vic)}, headers=json_)
    assert r.status_code == 403 and "editor" in r.json()["error"]
    r = amy.post(path, files={"image": ("x.png", b"<svg/>", "image/png")}, data={"csrf": csrf(amy)}, headers=json_)
    assert r.status_code == 400 and "not an image" in r.json()["error"]
    r = amy.post(
        path,
        files={"image": ("x.png", _header_only_png(9000, 9000), "image/png")},
        data={"csrf": csrf(amy)},
        headers=ORIGIN,
    )
    assert r.status_code == 413 and "9000x9000" in r.text  # the layer page again, the reason beside the form
    assert _counts(engine) == before
    r = amy.post(path, files=image, data={"csrf": csrf(amy), "preset": "thumbnail"}, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/n/inceptionv1/mixed3a#views"
    r = amy.post(path, files=image, data={"csrf": csrf(amy), "preset": "thumbnail"}, headers=json_)
    assert r.status_code == 200 and r.json()["job"]["status"] in ("QUEUED", "RUNNING", "DONE")
    assert _counts(engine)[0] == before[0] + 1
    page = amy.get("/n/inceptionv1/mixed3a").text
    assert 'enctype="multipart/form-data"' in page and 'action="/n/inceptionv1/mixed3a/caricature"' in page
    assert 'action="/n/inceptionv1/mixed3a/caricature"' not in vic.get("/n/inceptionv1/mixed3a").text


def _kb(env: dict, *args, timeout=300):
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def test_kb_render_image_file(db_url, engine, inceptionv1, tmp_path):
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_STORAGE_DIR": str(get_settings().artifacts_dir)}
    good = tmp_path / "cat.jpg"
    Image.fromarray(_picture(14)).save(good, format="JPEG")
    argv = ["render", "--layer", "InceptionV1 3a", "--kind", "caricature", "--size", "32", "--steps", "3"]
    first, again = _kb(env, *argv, "--image-file", str(good)), _kb(env, *argv, "--image-file", str(good))
    assert first.returncode == 0 and "uploaded cat.jpg as " in first.stderr, first.stderr
    assert again.returncode == 0 and "already here: cat.jpg" in again.stderr and again.stdout == first.stdout
    sha = re.search(r"as ([0-9a-f]{64})", first.stderr).group(1)
    with engine.connect() as conn:
        params = conn.execute(
            sa.text(
                "SELECT params FROM render_job WHERE kind = 'CARICATURE' AND layer_key = 'mixed3a' ORDER BY id DESC"
            )
        ).first()[0]
    assert (params if isinstance(params, dict) else json.loads(params))["upload"] == sha
    html = tmp_path / "x.png"
    html.write_bytes(b"<html>not a picture</html>")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_header_only_png(9000, 9000))
    for extra, says in (
        (["--image-file", str(html)], "error: not an image"),
        (["--image-file", str(bomb)], "error: the image is 9000x9000"),
        (["--image-file", str(tmp_path / "none.png")], "error: "),
        (["--image-file", str(good), "--dataset", "d", "--image", "0"], "error: --image-file is a caricature's"),
    ):
        r = _kb(env, *argv, *extra)
        assert r.returncode == 1 and r.stderr.startswith(says) and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_worker_renders_it_the_page_shows_it_with_its_source_and_bundles_carry_it(
    api, accounts, db_url, engine, tmp_path
):
    import redis
    from test_render import _wait, _worker

    from kb.render import bundles

    redis.Redis.from_url(os.environ["KB_BROKER_URL"]).flushdb()
    ed = accounts["editor"]["token"]
    sha = _upload(api, ed, _png(_picture(20, (48, 48))), 201)["upload"]["sha256"]
    job = as_user(api, ed, REQUEST, {"layer": "InceptionV1 3b", "p": {**SMALL, "seed": 4, "upload": sha}})
    job = job["data"]["requestLayerRender"]
    worker = _worker(db_url, get_settings().artifacts_dir)
    try:
        (done,) = _wait(api, [job["id"]], lambda js: js[0]["status"] in ("DONE", "FAILED"))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert done["status"] == "DONE", done
    views = gql(api, '{ layer(key: "InceptionV1 3b") { views { kind upload source { url width } artifact { url } } } }')
    (mine,) = [v for v in views["data"]["layer"]["views"] if v["upload"] == sha]
    assert mine["source"]["url"].endswith(f"/artifacts/{sha}.png") and mine["source"]["width"] == 48
    page = api.get("/n/inceptionv1/mixed3b").text
    for url in (mine["source"]["url"], mine["artifact"]["url"]):
        path = url.split("kb.example.org")[1]
        assert f'src="{path}"' in page and api.get(path).content[:4] == b"\x89PNG"
    assert f"an uploaded image ({sha[:12]}) and its caricature" in page

    # a bundle carries the uploaded image; imported where it is missing, it comes back with its row
    storage = store_for(engine)  # the api's and the worker's
    out = tmp_path / "b.tar"
    bundles.export(engine, storage, "inceptionv1", out, ["CARICATURE"])
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert f"images/{sha}.png" in names and sha in {u["sha256"] for u in manifest["uploads"]}
    assert all("uploaded_by" not in u["meta"] for u in manifest["uploads"])
    with engine.begin() as conn:  # this knowledge base loses the upload and its caricature
        art = conn.execute(sa.text("SELECT id FROM artifact WHERE sha256 = :s"), {"s": sha}).scalar_one()
        conn.execute(sa.text("DELETE FROM render_job WHERE id = :j"), {"j": job["id"]})
        conn.execute(sa.text("DELETE FROM artifact WHERE id = :a"), {"a": art})
    storage.delete(sha, ".png")
    report = bundles.import_bundle(engine, storage, out)
    assert report.new_jobs >= 1 and storage.exists(sha, ".png")
    views = gql(api, '{ layer(key: "InceptionV1 3b") { views { upload source { width } } } }')
    assert {"upload": sha, "source": {"width": 48}} in views["data"]["layer"]["views"]
    # a bundle whose caricature names an upload it does not carry is refused, and leaves nothing
    manifest["uploads"] = []
    bad = tmp_path / "bad.tar"
    body = json.dumps(manifest).encode()
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    with pytest.raises(bundles.BundleProblem, match="not in the bundle's uploads"):
        bundles.import_bundle(engine, storage, bad)


# ------------------------------------------------------------------------------------------------- Chromium


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
def test_an_editor_uploads_on_the_layer_page_and_the_caricature_appears(engine, db_url, inceptionv1, tmp_path):
    pytest.importorskip("playwright.sync_api")
    from browsers import ARGS, CHROMIUM, csp_violations, people, screenshot, sign_in
    from playwright.sync_api import expect, sync_playwright
    from servers import kb_serve
    from waits import wait_until

    (amy, viewer) = people(engine, "editor", "viewer")
    with engine.begin() as conn:  # the module's earlier jobs were never meant to be rendered: not ahead of this one
        conn.execute(
            sa.text("UPDATE render_job SET status = 'FAILED', error = 'test' WHERE status IN ('QUEUED', 'RUNNING')")
        )
    picture = tmp_path / "stripes.png"
    stripes = np.zeros((96, 96, 3), dtype=np.uint8)
    stripes[:, ::12] = (230, 60, 40)
    stripes[::16, :] = (40, 90, 220)
    Image.fromarray(stripes).save(picture)
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",  # the embedded broker and the server's own worker
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(get_settings().artifacts_dir),
        "KB_RENDER_DEVICE": "cpu",
        "KB_RENDER_SWEEP_S": "2",
        "KB_VIEW_THUMBNAILS": "false",  # the worker renders the caricature, not the grid's thumbnails
        "KB_THUMBNAIL_SIZE": "48",  # the thumbnail preset: a small, fast caricature
        "KB_THUMBNAIL_STEPS": "6",
    }
    layer = "/n/inceptionv1/mixed3a"
    with kb_serve(env, log=tmp_path / "serve.log", timeout=120) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            violations: list[str] = []
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            page.set_default_timeout(90000)  # a shared 2-core machine
            csp_violations(page, violations)
            sign_in(page, base, viewer, layer)
            expect(page.locator("form.caricature-upload")).to_have_count(0)  # a viewer is offered no upload
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            page.set_default_timeout(90000)
            csp_violations(page, violations)
            sign_in(page, base, amy, layer)
            form = page.locator("form.caricature-upload")
            form.get_by_label("Caricature of an image of yours").set_input_files(str(picture))
            with engine.connect() as conn:
                mark = conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM render_job")).scalar_one()
            form.get_by_role("button", name="Upload and render").click()
            page.wait_for_url(re.compile(r".*/n/inceptionv1/mixed3a#views$"))
            stored = U.normalise(picture.read_bytes(), CAP, Settings().upload_max_pixels)[0]
            card = page.locator(f'[data-view="caricature"][data-upload="{hashlib.sha256(stored).hexdigest()}"]')

            def rendered() -> bool:  # the upload's jobs (asked after `mark`) all ended
                with engine.connect() as conn:
                    ended, total = conn.execute(
                        sa.text(
                            "SELECT COUNT(*) FILTER (WHERE status IN ('DONE', 'FAILED', 'CANCELLED')), COUNT(*) "
                            "FROM render_job WHERE id > :mark"
                        ),
                        {"mark": mark},
                    ).one()
                return 0 < total == ended

            wait_until(rendered, 240, "the caricature's render job to end (kb serve's local worker)", every=1)
            page.reload()  # the layer page shows what is rendered when it is read
            expect(card).to_have_count(1)
            sizes = card.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert sizes == [96, 48], sizes  # the uploaded image (as stored) and its caricature
            # a refused upload is said beside the form
            bad = tmp_path / "not.png"
            bad.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
            form = page.locator("form.caricature-upload")
            form.get_by_label("Caricature of an image of yours").set_input_files(str(bad))
            form.get_by_role("button", name="Upload and render").click()
            expect(page.locator("#caricature-status")).to_contain_text("not an image")
            page.locator("#views").scroll_into_view_if_needed()
            screenshot(page, "caricature-uploaded.png")
            if os.environ.get("KB_SCREENSHOTS"):
                page.locator("#views").screenshot(path=str(Path(os.environ["KB_SCREENSHOTS"]) / "caricature-views.png"))
            assert not violations, violations
        finally:
            browser.close()
