"""The streamed top-k of dataset examples equals a brute-force pass over all images at once."""

import numpy as np
import pytest
import torch
from torch import nn

from kb.render import dataset_examples as D


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    ).eval()


@pytest.mark.parametrize("strided_cost", [0, 8, 10**9])  # always per-map reads, the default, always full passes
def test_streamed_top_k_matches_brute_force(monkeypatch, strided_cost):
    monkeypatch.setattr(D, "STRIDED_READ_COST", strided_cost)
    model = _model().to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (23, 16, 16, 3), dtype=np.uint8)
    stream = [(list(range(lo, min(23, lo + 5))), images[lo : lo + 5]) for lo in range(0, 23, 5)]  # last batch: 3
    found, seen = D.collect(model, ["1", "2", "5"], stream, k=4)
    assert seen == 23 and sum(len(m._forward_hooks) for m in model.modules()) == 0

    acts = {}
    hooks = [
        dict(model.named_modules())[p].register_forward_hook(lambda m, i, o, p=p: acts.__setitem__(p, o.detach()))
        for p in ("1", "2", "5")
    ]
    pre = D.preprocess_fn("imagenet")
    with torch.no_grad():
        model(pre(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255))
    for h in hooks:
        h.remove()
    for path, a in acts.items():
        if a.dim() == 2:
            a = a[:, :, None, None]
        n, c, h, w = a.shape
        flat = a.reshape(n, c, h * w)
        best, where = flat.max(dim=2)  # [N, C]
        top = torch.topk(best, 4, dim=0)
        got = found[path]
        assert got.shape == (h, w)
        assert torch.allclose(got.values, top.values, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.images, top.indices)  # stream indices are the image numbers here
        assert torch.equal(got.positions, where.gather(0, top.indices))
