"""A layer's own pictures (Microscope's layer views): DEEPDREAM and CARICATURE.

The renderer on a tiny seeded network (the objective moves the right way), then the whole path on both databases:
requestLayerRender (idempotent, coded errors), a real worker on Redis, Layer.views, the layer page (and its
screenshot), `kb render --layer ... --kind deepdream`, and render bundles' records of them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_user, gql

from kb.render import layer_views as LV
from kb.render.jobs import InvalidKind

REQUEST = """mutation($kind: LayerRenderKind!, $layer: String!, $p: RenderParamsInput) {
    requestLayerRender(kind: $kind, layer: $layer, params: $p) { id status kind layer neuron { key } } }"""
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none"}
TINY = {"size": 32, "upsample": 0, "lr": 0.05}


def _start(size: int, seed: int) -> np.ndarray:
    _, image_f = LV.start_image(size, seed)
    with torch.no_grad():
        return (image_f()[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("transforms", ["none", "standard"])
def test_deepdream_raises_the_layers_objective(transforms):
    import tiny

    model = tiny.rgb(0)
    made = LV.render_layer_view(model, "3", "DEEPDREAM", steps=12, seed=1, transforms=transforms, **TINY)
    assert made.shape == (32, 32, 3) and made.dtype == np.uint8 and _hooks(model) == 0
    acts = LV.layer_activations(model, "3", [_start(32, 1), made], upsample=0)
    start, end = (acts**2).mean(dim=(1, 2, 3)).tolist()  # the deep dream objective: mean squared activation
    assert end > 2 * start, (start, end)
    again = LV.render_layer_view(model, "3", "DEEPDREAM", steps=12, seed=1, transforms=transforms, **TINY)
    assert np.array_equal(made, again)  # seeded


def test_caricature_moves_the_activations_towards_the_target():
    import tiny

    model = tiny.rgb(0)
    target = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    made = LV.render_layer_view(model, "3", "CARICATURE", target=target, steps=12, seed=2, transforms="none", **TINY)
    assert _hooks(model) == 0
    acts = LV.layer_activations(model, "3", [target, _start(32, 2), made], upsample=0).flatten(1)
    cos = torch.nn.functional.cosine_similarity
    before, after = cos(acts[1], acts[0], dim=0).item(), cos(acts[2], acts[0], dim=0).item()
    assert after > before + 0.05, (before, after)
    with pytest.raises(InvalidKind, match="target image at 32x32"):
        LV.render_layer_view(model, "3", "CARICATURE", target=target[:16], steps=1, **TINY)


def test_the_objectives_are_lucent_objectives():
    from lucent.optvis.objectives import Objective

    from kb.render import lucent_adapter as A

    acts = torch.tensor([[[[1.0, 2.0]]], [[[2.0, 4.0]]]])  # image 0 the target, image 1 twice it
    dream, compare = A.deepdream("x"), A.dot_compare("x", batch=1)
    assert isinstance(dream, Objective) and isinstance(compare, Objective)
    assert dream(lambda _: acts).item() == pytest.approx(-(1 + 4 + 4 + 16) / 4)
    assert compare(lambda _: acts).item() == pytest.approx(-10.0, rel=1e-4)  # dot 10, cosine 1
    opposite = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    assert compare(lambda _: opposite).item() == 0.0


def _kb(env: dict, *args, timeout=300):
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def digits(db_url, engine, tmp_path_factory):
    """sklearn's 8x8 digits (the offline test data): the first five as 32 px PNGs, registered as a dataset."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    for i, d in enumerate(load_digits().images[:5]):
        pixels = (d / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").resize((32, 32), Image.NEAREST).save(folder / f"{i:02d}.png")
    name = f"digits-{os.getpid()}"
    r = _kb({"KB_DATABASE_URL": db_url}, "dataset", "add", name, str(folder))
    assert r.returncode == 0, r.stderr
    return name


def test_requests_are_idempotent_and_bad_input_is_coded(api, accounts, digits):
    ed = accounts["editor"]["token"]

    def ask(kind, layer, p):
        return as_user(api, ed, REQUEST, {"kind": kind, "layer": layer, "p": p})

    first = ask("DEEPDREAM", "InceptionV1 3a", {**SMALL, "seed": 5})["data"]["requestLayerRender"]
    assert first["kind"] == "DEEPDREAM" and first["layer"] == "inceptionv1/mixed3a" and first["neuron"] is None
    again = ask("DEEPDREAM", "inceptionv1/mixed3a", {**SMALL, "seed": 5, "negative": True, "topK": 3})
    assert again["data"]["requestLayerRender"]["id"] == first["id"]  # parameters a deep dream ignores: the same job
    other = ask("DEEPDREAM", "InceptionV1 3a", {**SMALL, "seed": 6})["data"]["requestLayerRender"]
    assert other["id"] != first["id"]
    c0 = ask("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": digits, "image": 0})["data"]["requestLayerRender"]
    c0b = ask("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": digits, "image": 0})["data"]["requestLayerRender"]
    c1 = ask("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": digits, "image": 1})["data"]["requestLayerRender"]
    assert c0["id"] == c0b["id"] and len({c0["id"], c1["id"], first["id"]}) == 3
    for kind, layer, p, code, says in (
        ("DEEPDREAM", "InceptionV1 3z", SMALL, "NOT_FOUND", "3z"),
        ("DEEPDREAM", "nomodel/mixed3a", SMALL, "NOT_FOUND", "nomodel"),
        ("DEEPDREAM", "InceptionV1 3a", {**SMALL, "size": 4}, "BAD_INPUT", "size"),
        ("CARICATURE", "InceptionV1 3a", SMALL, "BAD_INPUT", "dataset name and an image index"),
        ("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": digits}, "BAD_INPUT", "image index"),
        ("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": "nope", "image": 0}, "NOT_FOUND", "no dataset 'nope'"),
        ("CARICATURE", "InceptionV1 3a", {**SMALL, "dataset": digits, "image": 5}, "NOT_FOUND", "has 5 images"),
    ):
        err = ask(kind, layer, p)["errors"][0]
        assert err["extensions"]["code"] == code and says in err["message"], (kind, layer, p, err)
    for kind, how in (("DEEPDREAM", 'neurons: ["InceptionV1 3a:1"]'), ("CARICATURE", 'layer: "InceptionV1 3a"')):
        units = as_user(api, ed, f"mutation {{ requestRender(kind: {kind}, {how}) {{ id }} }}")["errors"][0]
        assert units["extensions"]["code"] == "BAD_INPUT" and "requestLayerRender" in units["message"], units
    err = as_user(api, None, REQUEST, {"kind": "DEEPDREAM", "layer": "InceptionV1 3a", "p": SMALL})["errors"][0]
    assert err["extensions"]["code"] == "UNAUTHENTICATED"
    err = as_user(api, accounts["viewer"]["token"], REQUEST, {"kind": "DEEPDREAM", "layer": "InceptionV1 3a"})
    assert err["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_worker_renders_them_and_the_layer_page_shows_them(api, accounts, db_url, engine, digits, tmp_path):
    import redis
    from test_render import _wait, _worker

    from kb.db.catalog import load_catalog
    from kb.render import bundles
    from kb.settings import get_settings

    redis.Redis.from_url(os.environ["KB_BROKER_URL"]).flushdb()
    ed = accounts["editor"]["token"]
    params = {**SMALL, "seed": 9, "steps": 4}
    asked = [
        as_user(api, ed, REQUEST, {"kind": kind, "layer": "InceptionV1 3b", "p": p})["data"]["requestLayerRender"]
        for kind, p in (("DEEPDREAM", params), ("CARICATURE", {**params, "dataset": digits, "image": 2}))
    ]
    page = api.get("/n/inceptionv1/mixed3b").text  # before: placeholders and the lines that ask for them
    assert "Layer views" in page and "deep dream: not rendered yet" in page
    assert "requestLayerRender(kind: DEEPDREAM, layer: &#34;inceptionv1/mixed3b&#34;)" in page
    assert "kb render --layer inceptionv1/mixed3b --kind deepdream --wait" in page
    worker = _worker(db_url, get_settings().artifacts_dir)
    try:
        jobs = _wait(api, [j["id"] for j in asked], lambda js: all(j["status"] in ("DONE", "FAILED") for j in js))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [j["status"] for j in jobs] == ["DONE", "DONE"], jobs
    views = gql(
        api,
        '{ layer(key: "InceptionV1 3b") { views { kind dataset image params artifact { url width } } '
        "visualizations { index } } }",
    )["data"]["layer"]
    # this test's: the deep dream and the caricature of its data set's image (others' caricatures of uploaded
    # images of this layer, made earlier in the session, are test_caricature_uploads')
    own = [v for v in views["views"] if v["kind"] == "DEEPDREAM" or v["dataset"] == digits]
    assert [(v["kind"], v["dataset"], v["image"], v["artifact"]["width"]) for v in own] == [
        ("DEEPDREAM", None, None, 32),
        ("CARICATURE", digits, 2, 32),
    ]
    assert all(v["index"] >= 0 for v in views["visualizations"])  # a layer's picture is no unit's
    assert json.loads(own[0]["params"])["seed"] == 9
    page = api.get("/n/inceptionv1/mixed3b").text
    for v in own:
        path = v["artifact"]["url"].split("kb.example.org")[1]
        assert f'src="{path}"' in page and api.get(path).content[:4] == b"\x89PNG"
    assert "deep dream: not rendered yet" not in page and f"caricature of {digits} #2" in page
    _screenshot(db_url, "/n/inceptionv1/mixed3b")

    # render bundles carry them: their records check against the model (unit -1), a unit kind's would not
    with engine.connect() as conn:
        model = load_catalog(conn).model("inceptionv1")
        records = bundles.records_of(conn, model.sha256, ["DEEPDREAM", "CARICATURE"])
    assert {(r["layer"], r["unit"], r["kind"]) for r in records} >= {
        ("mixed3b", -1, "DEEPDREAM"),
        ("mixed3b", -1, "CARICATURE"),
    }
    for i, rec in enumerate(records):
        assert bundles.check_record(i, rec, model)["job"]["unit"] == -1
    with pytest.raises(bundles.BundleProblem, match="unit"):
        bundles.check_record(0, {**records[0], "unit": 0}, model)


def test_kb_render_layer_kinds(db_url, engine, inceptionv1, digits, tmp_path):
    """`kb render --layer L --kind deepdream` asks through the same function: asked again, the same job."""
    env = {"KB_DATABASE_URL": db_url, "KB_BROKER_URL": "", "KB_DATA_DIR": str(tmp_path / "data")}
    argv = ["render", "--layer", "InceptionV1 3a", "--kind", "deepdream", "--size", "32", "--steps", "3"]
    first, again = _kb(env, *argv), _kb(env, *argv)
    assert first.returncode == 0 and "1 DEEPDREAM jobs (interactive lane)" in first.stderr, first.stderr
    assert first.stdout.split()[:3] == ["inceptionv1/mixed3a", "deepdream", "QUEUED"], first.stdout
    assert again.returncode == 0 and again.stdout == first.stdout and "0 sent, 1 already asked for" in again.stderr
    for args, message in (
        (["--layer", "InceptionV1 3z", "--kind", "deepdream"], "error: "),
        (["InceptionV1 3a:0", "--kind", "deepdream"], "error: DEEPDREAM is a picture of a whole layer"),
        (["--layer", "InceptionV1 3a", "--kind", "caricature"], "error: CARICATURE needs a dataset name"),
        (
            ["--layer", "3a", "--model", "inceptionv1", "--kind", "caricature", "--dataset", "nope", "--image", "0"],
            "error: no dataset 'nope'",
        ),
        (
            ["--layer", "InceptionV1 3a", "--kind", "caricature", "--dataset", digits, "--image", "9"],
            f"error: dataset '{digits}' has 5 images",
        ),
    ):
        r = _kb(env, "render", *args)
        assert r.returncode == 1 and r.stderr.startswith(message), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _screenshot(db_url: str, path: str) -> None:
    """The page's Layer views section in Chromium: its images load; a layer with none shows the placeholders.
    Screenshots where KB_SCREENSHOTS says."""
    from browsers import SHOTS, served_browser

    with served_browser(db_url) as (base, browser):
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        for where, name in ((path, "layer-views"), ("/n/inceptionv1/mixed4e", "layer-views-none")):
            page.goto(f"{base}{where}#views")
            section = page.locator("#views")
            loaded = section.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
            if where == path:  # its two 32 px pictures (and any caricature of an upload made earlier, and its source)
                assert loaded.count(32) >= 2 and all(loaded), loaded
            else:
                assert loaded == [], loaded
            if where != path:
                section.get_by_text("Render the deep dream or a caricature").click()
                assert section.get_by_text("kb render --layer inceptionv1/mixed4e --kind deepdream --wait").is_visible()
            if SHOTS is not None:
                SHOTS.mkdir(parents=True, exist_ok=True)
                section.screenshot(path=str(SHOTS / f"{name}.png"))
