"""A tiny CNN whose weights the tests set by hand, so that every expected edge is computed on paper."""

from __future__ import annotations

import torch
from torch import nn

from kb.graph import zoo
from kb.graph.zoo.spec import Architecture, Branches, LayerSpec, M


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2, eps=1.0)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Conv2d(2, 1, 1, bias=False)  # branch a: 1x1
        self.b_reduce = nn.Conv2d(2, 1, 1, bias=False)  # branch b: 1x1 reduce, then 3x3
        self.b = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.block = nn.Identity()  # marks the block's (concatenated) output for hooks

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.conv1(x)))))
        x = self.pool(x)
        out = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(torch.relu(self.b_reduce(x))))], 1)
        return self.block(out)


def build() -> Tiny:
    m = Tiny()
    with torch.no_grad():
        m.conv1.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        w2 = torch.zeros(2, 2, 3, 3)
        w2[0, 0] = 1.0  # all ones: weight 9, magnitude 3
        w2[0, 1, 1, 1] = -1.0  # a single -1: weight -1, magnitude 1
        w2[1, 0] = torch.arange(1.0, 10.0).view(3, 3)  # 1..9: weight 45, magnitude sqrt(285)
        m.conv2.weight.copy_(w2)  # w2[1, 1] stays zero
        m.bn2.weight.copy_(torch.tensor([4.0, 1.0]))
        m.bn2.bias.zero_()
        m.bn2.running_var.copy_(torch.tensor([3.0, 3.0]))  # scale = gamma / sqrt(var + eps) = [2, 0.5]
        m.bn2.running_mean.zero_()
        m.a.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        m.b_reduce.weight.copy_(torch.tensor([2.0, 0.0]).view(1, 2, 1, 1))
        m.b.weight.copy_(torch.ones(1, 1, 3, 3))
    return m.eval()


TINY = Architecture(
    name="tiny",
    source="test:tiny",
    input_shape=(1, 16, 16),
    layers=(
        LayerSpec("c1", "relu1", "conv", ("conv",), ("conv1",)),
        LayerSpec("c2", "relu2", "conv", ("conv",), ("conv2",)),
        LayerSpec("mixed", "block", "inception", ("inception",), ("3a",)),
    ),
    trunk=(
        M("conv1"),
        M("relu1"),
        M("conv2"),
        M("bn2"),
        M("relu2"),
        M("pool"),
        Branches("block", ((M("a"),), (M("b_reduce"), M("b")))),
    ),
    build=build,
    description="hand-built test network",
)

# Expected edges, worked out by hand: (source layer, source unit, target layer, target unit) -> (weight, magnitude)
EXPECTED = {
    ("c1", 0, "c2", 0): (9 * 2.0, 3 * 2.0),
    ("c1", 1, "c2", 0): (-1 * 2.0, 1 * 2.0),
    ("c1", 0, "c2", 1): (45 * 0.5, 285**0.5 * 0.5),
    ("c1", 1, "c2", 1): (0.0, 0.0),
    # the 2x2 max-pool is linearised as its average: a 1x1 conv after it spreads 1/4 over 2x2
    ("c2", 0, "mixed", 0): (1.0, 0.5),
    ("c2", 1, "mixed", 0): (-1.0, 0.5),
    # reduce (x2) then a 3x3 of ones at stride 2 after the pool: a 6x6 kernel of 0.5
    ("c2", 0, "mixed", 1): (18.0, 3.0),
    ("c2", 1, "mixed", 1): (0.0, 0.0),
}
METHODS = {("c1", "c2"): "direct", ("c2", "mixed"): "expanded"}


def register() -> Architecture:
    return zoo.register(TINY)


def rgb(seed: int = 0) -> nn.Sequential:
    """A tiny RGB network with seeded random weights, for renders (two convolutions; layers "1" and "3")."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()
