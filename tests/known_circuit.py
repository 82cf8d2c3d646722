"""A network built by hand whose circuit answers are known: the target unit is exactly ReLU(a + b).

Input channels x0, x1, x2. The source layer ``inputs`` (linear, no ReLU) has units a = x0, b = x0, c = x1; the
target layer ``out`` has unit 0 = ReLU(a + b) and unit 1 = ReLU(c). So for target 0 the circuit {a, b} is
sufficient and necessary (1 and 1) under every ablation, {c} is neither (0 and 0), and under zero ablation
ablating a alone halves the unit (its own effect: 0.5). Registered as ``test:known`` for the job tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kb.graph import zoo
from kb.graph.zoo.spec import Architecture, LayerSpec, M


class KnownAnswer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1, bias=False)
        self.inputs = nn.Identity()  # the source layer: a, b, c
        self.conv2 = nn.Conv2d(3, 2, 1, bias=False)
        self.out = nn.ReLU()  # the target layer
        self.head = nn.Conv2d(2, 1, 1)  # after the target: never run by a check
        with torch.no_grad():
            w1 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            self.conv1.weight.copy_(w1.view(3, 3, 1, 1))
            self.conv2.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).view(2, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x):
        return self.head(self.out(self.conv2(self.inputs(self.conv1(x)))))


KNOWN = Architecture(
    name="known",
    source="test:known",
    input_shape=(3, 8, 8),
    layers=(
        LayerSpec("inputs", "inputs", "conv", ("conv",)),
        LayerSpec("out", "out", "conv", ("conv",)),
    ),
    trunk=(M("conv1"), M("inputs"), M("conv2"), M("out")),
    build=KnownAnswer,
    description="hand-built: out:0 = ReLU(inputs:0 + inputs:1)",
)


def register() -> Architecture:
    return zoo.register(KNOWN)


def images(n: int = 64, size: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def write_pngs(folder, n: int = 48, size: int = 8, seed: int = 0) -> None:
    """``n`` noise images as PNG files (a data set to register)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
