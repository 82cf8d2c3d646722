"""demo:digits, the model organism trained here: one seed gives one set of weights, it is accurate and says how
it was made, `kb import demo:digits` imports it with its images as a data set, and its units mean something: a
unit's feature visualization activates it more than any of its images does, and its dataset examples are its top
activations over all the images (a direct forward pass)."""

import re
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from conftest import gql

from kb.db.tables import model_table
from kb.graph.weights import state_dict_sha256
from kb.graph.zoo import digits_training as T


def test_one_seed_gives_one_set_of_weights(digits_model, tmp_path):
    short = replace(T.RECIPE, epochs=1)  # the same training, one epoch (the full one is digits_model's)
    first, again, other = T.train(3, short), T.train(3, short), T.train(4, short)
    sha = state_dict_sha256(first.model.state_dict())
    assert state_dict_sha256(again.model.state_dict()) == sha
    assert state_dict_sha256(other.model.state_dict()) != sha
    assert torch.get_num_threads() > 0 and not torch.are_deterministic_algorithms_enabled()  # restored after
    cached = T.trained(3, tmp_path, short)  # trains and caches; then read back, not trained again
    assert state_dict_sha256(cached.model.state_dict()) == sha
    back = T.trained(3, tmp_path, short)
    assert state_dict_sha256(back.model.state_dict()) == sha and back.seconds == cached.seconds


def test_it_is_accurate_and_its_provenance_says_how_it_was_made(digits_model, digits_import, engine):
    m = digits_model
    assert len(m.labels) == 1797 and m.images.shape == (1797, 3, 32, 32) and len(m.held_out) == 360
    assert torch.equal(m.images[:, 0], m.images[:, 2])  # grey in three channels
    assert m.accuracy == T.accuracy(m.model, m.images[m.held_out], m.labels[m.held_out]) >= 0.95
    with engine.connect() as conn:
        row = conn.execute(sa.select(model_table).where(model_table.c.key == "digits")).one()
    assert row.source == "demo:digits" and row.sha256 == state_dict_sha256(m.model.state_dict())
    recorded = re.search(r"held-out accuracy=([0-9.]+) \((\d+)/360\) in ([0-9.]+)s", row.weights)
    assert recorded and float(recorded.group(1)) == pytest.approx(m.accuracy, abs=1e-4) and m.accuracy >= 0.95
    for part in ("trained digits-v1 seed=0 ", "conv3x3 8-16-32", "Adam lr=0.003", "epochs=10", "32x32", "1437/360"):
        assert part in row.weights, (part, row.weights)
    assert "dataset digits: " in digits_import.stdout and "imported digits@" in digits_import.stdout


def test_the_neighbour_query_answers_its_weights(digits_import, digits_model, api):
    q = """{ neuron(key: "digits/conv2:5") { key pinnedKey
        inputs(first: 3, orderBy: WEIGHT) { edges { weight method node { key } } } } }"""
    n = gql(api, q)["data"]["neuron"]
    sha = state_dict_sha256(digits_model.model.state_dict())
    assert n["key"] == "digits/conv2:5" and n["pinnedKey"] == f"digits@{sha[:12]}/conv2:5"
    kernel_sums = digits_model.model.conv2.weight[5].sum(dim=(1, 2))  # a direct conv: weight = sum of the kernel
    top = torch.topk(kernel_sums, 3)
    edges = n["inputs"]["edges"]
    assert [e["node"]["key"] for e in edges] == [f"digits/conv1:{i}" for i in top.indices.tolist()]
    assert [e["weight"] for e in edges] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert {e["method"] for e in edges} == {"direct"}
    logits = gql(api, '{ neuron(key: "Digits logits:7") { key inputs(first: 1) { edges { node { key } } } } }')
    assert logits["data"]["neuron"]["inputs"]["edges"][0]["node"]["key"].startswith("digits/conv3:")


def _worker_model(engine):
    """The model as a render worker has it: reloaded from its recorded provenance, checked against its hash."""
    from kb.render.model_cache import cached_model

    with engine.connect() as conn:
        row = conn.execute(sa.select(model_table).where(model_table.c.key == "digits")).one()
    return cached_model(row.source, row.weights, row.sha256, "cpu")


def _activations(model, module: str, images: torch.Tensor) -> torch.Tensor:
    got = []
    handle = dict(model.named_modules())[module].register_forward_hook(lambda m, i, o: got.append(o.detach()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return got[0]


def test_dataset_examples_are_its_top_activations(digits_import, digits_model, engine):
    from kb.render import dataset_cache
    from kb.render import dataset_examples as D
    from kb.render.datasets import dataset_by_name
    from kb.settings import Settings

    arch, model = _worker_model(engine)
    k, units = 9, list(range(32))
    pictures = dataset_cache.dataset_examples(
        engine, Settings(render_device="cpu"), arch, model, "conv3", {"dataset": "digits", "top_k": k},
        [{"unit": u} for u in units], lambda *a: None,
    )  # fmt: skip
    ((_, found),) = dataset_cache._TOPK_CACHE.values()  # what the worker's one streamed pass kept
    # the same top-k from one forward pass over the images tensor (not the files) of the trained network
    acts = _activations(digits_model.model, "relu3", digits_model.images)  # N x 32 x 8 x 8
    best, where = acts.flatten(2).max(dim=2)  # each image's maximum per channel, and where
    top = torch.topk(best, k + 1, dim=0)
    assert torch.allclose(found.values, top.values[:k], atol=1e-4)
    channel = torch.arange(32).expand(k, 32)
    assert torch.allclose(best[found.images, channel], found.values, atol=1e-4)  # each one is among the top k
    at = acts.flatten(2)[found.images, channel, found.positions]
    assert torch.allclose(at, found.values, atol=1e-4)  # its crop is centred at its maximum
    # where the top k are unambiguous (no tie among the first k + 1), the pictures are exactly these images
    expected = D.TopK(top.values[:k], top.indices[:k], where.gather(0, top.indices[:k]), (8, 8))
    with engine.connect() as conn:
        files = D.image_files(dataset_by_name(conn, "digits")["path"])
    assert len(files) == 1797
    clear = [u for u in units if len(set(top.values[:, u].tolist())) == k + 1 and top.values[k - 1, u] > 0]
    assert len(clear) >= 8, clear
    for u in clear:
        assert np.array_equal(pictures[u], D.grid(files, expected, u, 32)), u


@pytest.mark.parametrize(("layer", "module"), [("conv3", "relu3"), ("logits", "fc")])
def test_a_units_feature_visualization_beats_its_best_image(digits_import, digits_model, engine, layer, module):
    """The renderer's objective, a unit's mean activation over positions, on its rendered image (32 px, 8 bits)
    against its best image of all 1,797: the optimised image activates it more. Units that some image activates
    (a unit no image activates is dead: its ReLU is zero everywhere), four of them. Without lucent's standard
    transforms: made for 224 px, at 32 px they jitter by a quarter of the image (the logits then stay below)."""
    from kb.render.feature_vis import render_units
    from kb.render.preprocess import preprocess_kind

    net = digits_model.model
    data = _activations(net, module, digits_model.images)
    data = data.mean(dim=(2, 3)) if data.dim() == 4 else data
    units = [u for u in range(data.shape[1]) if data[:, u].max() > 0][:4]
    assert len(units) == 4
    arch, model = _worker_model(engine)
    made = render_units(
        model, arch.layer(layer).module, units, size=32, steps=48, seed=0, upsample=0, transforms="none", lr=0.1,
        preprocess=preprocess_kind(arch.source), device="cpu",
    )  # fmt: skip
    pixels = torch.from_numpy(np.stack(made)).permute(0, 3, 1, 2).float() / 255  # as stored: 8 bits
    rendered = _activations(net, module, pixels)
    rendered = rendered.mean(dim=(2, 3)) if rendered.dim() == 4 else rendered
    for i, u in enumerate(units):
        assert rendered[i, u] > data[:, u].max(), (layer, u, float(rendered[i, u]), float(data[:, u].max()))
