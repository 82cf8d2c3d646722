"""Expanded weights against an independent computation: autograd through the real, linearised modules.

For every link of every architecture in the zoo (random weights, BatchNorm statistics randomised so that
folding matters), the Jacobian of one target unit per branch at the centre position with respect to the
source layer must equal the expanded kernel, and be zero outside its window.
"""

import numpy as np
import pytest
import torch
from jacobian import jacobian
from torch import nn

from kb.graph import zoo
from kb.graph.extract import links
from kb.graph.zoo.spec import Architecture, LayerSpec, M

pytestmark = pytest.mark.database_free  # pure torch/numpy: the same on either backend (see conftest)


class Grouped(nn.Module):
    """Grouped and dilated convolutions, and a MobileNet-style depthwise (dilated) + pointwise pair."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4)
        self.bn2 = nn.BatchNorm2d(12)
        self.relu2 = nn.ReLU()
        self.dw = nn.Conv2d(12, 12, 3, padding="same", dilation=(2, 3), groups=12, bias=False)
        self.pw = nn.Conv2d(12, 16, 1)
        self.relu3 = nn.ReLU()

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.conv1(x)))))
        return self.relu3(self.pw(self.dw(x)))


GROUPED = zoo.register(
    Architecture(
        name="grouped",
        source="test:grouped",
        input_shape=(3, 32, 32),
        layers=(
            LayerSpec("c1", "relu1", "conv", ("conv",)),
            LayerSpec("c2", "relu2", "conv", ("conv",)),
            LayerSpec("c3", "relu3", "conv", ("conv",)),
        ),
        trunk=tuple(M(p) for p in ("conv1", "relu1", "conv2", "bn2", "relu2", "dw", "pw", "relu3")),
        build=Grouped,
    )
)

SOURCES = [
    "lucent:inceptionv1",
    "torchvision:googlenet",
    "torchvision:resnet50",
    "torchvision:inception_v3",
    "torchvision:alexnet",
    "torchvision:vgg16",
    "torchvision:vgg19",
    "test:grouped",
    "demo:digits",
]


def _randomise_batchnorm(model):
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)


@pytest.mark.parametrize("source", SOURCES)
def test_expanded_kernels_equal_the_linearised_jacobian(source):
    arch = zoo.get(source)
    torch.manual_seed(0)
    model = arch.build().eval()
    _randomise_batchnorm(model)
    layer_shapes, programs = links(model, arch)
    assert [s.name for s in layer_shapes] == [s.name for s in arch.layers]
    checked = 0
    for link in programs:
        p = link.program
        slices = p.slices() if len(p.slices()) > 1 else [(0, p.out_channels)]
        for start, stop in slices[:6]:
            target = (start + stop) // 2
            grad, (y, x) = jacobian(
                model, arch.layer(link.source).module, arch.layer(link.target).module, target, arch.input_shape[1]
            )
            k = p.kernel(target)
            kh, kw = k.size
            y0, x0 = y * k.stride[0] - k.pad[0], x * k.stride[1] - k.pad[1]
            g = grad.numpy()
            assert y0 >= 0 and x0 >= 0 and y0 + kh <= g.shape[1] and x0 + kw <= g.shape[2], "window off the map"
            window = g[:, y0 : y0 + kh, x0 : x0 + kw]
            scale = np.abs(window).max()
            assert scale > 0
            np.testing.assert_allclose(k.weight[0], window, atol=2e-5 * scale, rtol=0)
            outside = g.copy()
            outside[:, y0 : y0 + kh, x0 : x0 + kw] = 0
            assert np.abs(outside).max() == 0
            checked += 1
    assert checked >= len(programs)


def test_inceptionv1_has_the_circuits_numbering():
    arch = zoo.get("lucent:inceptionv1")
    torch.manual_seed(0)
    layer_shapes, programs = links(arch.build(), arch)
    units = {s.name: s.units for s in layer_shapes}
    assert units["mixed4a"] == 508 and units["mixed4c"] == 512 and sum(units.values()) == 5804
    assert sum(p.program.in_channels * p.program.out_channels for p in programs) == 3_208_320
    assert [p.program.method for p in programs[:2]] == ["direct", "direct"]
    assert all(p.program.method == "expanded" for p in programs[2:])
    notes = " ".join(n for p in programs for n in p.program.notes)
    assert "max-pool 3x3/2 linearised as its average" in notes
