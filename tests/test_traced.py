"""The traced path (``kb.graph.traced``): any nn.Module's links, linearised by written rules.

For the zoo, the traced programs equal the hand-written trunks' (``kb.graph.extract``); for architectures the zoo
never declared (depthwise, grouped, dilated, squeeze-excitation, channel shuffle, more than 3 input channels),
sampled units equal autograd through the real, linearised modules (``tests/jacobian.py``). Ops with no rule are
refused in one line that names them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from jacobian import jacobian
from torch import nn

from kb.graph import traced, zoo
from kb.graph.extract import ExtractionError, links
from kb.graph.zoo.spec import Architecture, LayerSpec

pytestmark = pytest.mark.database_free  # pure torch/numpy: the same on either backend (see conftest)


def _randomise_batchnorm(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)


def _traced_arch(name: str, layers: list[str], shape: tuple[int, int, int], build) -> Architecture:
    return Architecture(
        name=name,
        source=f"test:{name}",
        input_shape=shape,
        layers=tuple(LayerSpec(p, p, "block") for p in layers),
        trunk=(),
        build=build,
    )


def _check_against_autograd(model: nn.Module, arch: Architecture, per_link: int = 2) -> int:
    """Sampled targets of every link: the kernel equals the Jacobian at the centre, and nothing reaches outside."""
    _, programs = links(model, arch)
    checked = 0
    for link in programs:
        p = link.program
        slices = p.slices()
        picks = [(s + e) // 2 for s, e in slices][:per_link] if len(slices) > 1 else []
        picks = picks or [int(t) for t in np.linspace(0, p.out_channels - 1, per_link).round()]
        for target in picks:
            grad, (y, x) = jacobian(
                model,
                arch.layer(link.source).module,
                arch.layer(link.target).module,
                target,
                arch.input_shape[1],
                arch.input_shape[0],
            )
            k = p.kernel(target)
            kh, kw = k.size
            y0, x0 = y * k.stride[0] - k.pad[0], x * k.stride[1] - k.pad[1]
            g = grad.numpy()
            # the part of the window on the map: what lies off it multiplies the padding's zeros
            gy0, gx0 = max(0, y0), max(0, x0)
            gy1, gx1 = min(g.shape[1], y0 + kh), min(g.shape[2], x0 + kw)
            window = g[:, gy0:gy1, gx0:gx1]
            kernel = k.weight[0][:, gy0 - y0 : gy1 - y0, gx0 - x0 : gx1 - x0]
            scale = np.abs(window).max()
            assert scale > 0, f"{link.source} → {link.target}:{target} has no inputs"
            np.testing.assert_allclose(kernel, window, atol=2e-5 * scale, rtol=0, err_msg=f"{link.target}:{target}")
            outside = g.copy()
            outside[:, gy0:gy1, gx0:gx1] = 0
            assert np.abs(outside).max() <= 1e-6 * scale, f"{link.target}:{target} reaches outside its window"
            checked += 1
    return checked


# -- the zoo: traced == hand-written --------------------------------------------------------------------------

ZOO = [
    "lucent:inceptionv1",
    "torchvision:googlenet",
    "torchvision:alexnet",
    "torchvision:vgg16",
    "torchvision:vgg19",
    "torchvision:resnet50",
    "torchvision:inception_v3",
]


def _kernels_equal(a, b, what: str) -> None:
    assert (a.stride, a.pad, a.size) == (b.stride, b.pad, b.size), what
    scale = max(float(np.abs(a.weight).max()), 1e-30)
    np.testing.assert_allclose(b.weight, a.weight, atol=1e-5 * scale, rtol=0, err_msg=what)


@pytest.mark.parametrize("source", ZOO)
def test_traced_links_equal_the_hand_written_zoo(source):
    """Every link of every zoo model: same channels, method and notes' count; the kernels of sampled targets (each
    slice's first and last) equal to 1e-5 of their largest value; InceptionV1's every edge's weight and
    magnitude (the full expansion) instead."""
    arch = zoo.get(source)
    torch.manual_seed(0)
    model = arch.build().eval()
    _randomise_batchnorm(model)
    hand_shapes, hand = links(model, arch)
    traced_shapes, auto = traced.links(model, dataclasses.replace(arch, trunk=()))
    assert traced_shapes == hand_shapes
    assert [(x.source, x.target) for x in auto] == [(x.source, x.target) for x in hand]
    for h, t in zip(hand, auto, strict=True):
        p, q = h.program, t.program
        assert (q.in_channels, q.out_channels, q.method) == (p.in_channels, p.out_channels, p.method)
        assert len(q.notes) == len(p.notes), (q.notes, p.notes)
        if source != "lucent:inceptionv1":
            for start, stop in p.slices():
                for target in sorted({start, stop - 1}):
                    _kernels_equal(p.kernel(target), q.kernel(target), f"{source} {h.source} → {h.target}:{target}")
        else:
            for (rows_p, w_p, m_p), (rows_q, w_q, m_q) in zip(p.expand(), q.expand(), strict=True):
                np.testing.assert_array_equal(rows_p, rows_q)
                np.testing.assert_allclose(w_q, w_p, atol=1e-5 * float(np.abs(w_p).max()), rtol=0)
                np.testing.assert_allclose(m_q, m_p, atol=1e-5 * float(m_p.max()), rtol=0)


# -- new architectures against autograd ------------------------------------------------------------------------


def _torchvision(name: str, **kwargs):
    return lambda: torchvision.models.get_model(name, weights=None, **kwargs)


def _grouped_dilated_4ch() -> nn.Module:
    """A ResNeXt-style ResNet (grouped 3x3s) whose last two stages are dilated, reading 4-channel images."""
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(
        Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=16, replace_stride_with_dilation=[False, True, True]
    )
    model.conv1 = nn.Conv2d(4, 64, 7, 2, 3, bias=False)
    return model


class _StochasticDepthResidual(nn.Module):
    """EfficientNet's residual: x + stochastic_depth(block(x)), identity at evaluation (torchvision.ops)."""

    def __init__(self):
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.drop = StochasticDepth(0.2, "row")
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(x + self.drop(self.block(x)))


NEW = {
    "resnet18": (
        _torchvision("resnet18"),
        ["layer1.1", "layer2.0", "layer3.0", "layer4.0", "layer4.1", "fc"],
        (3, 224, 224),
    ),
    "mobilenet_v3_small": (  # depthwise convs, squeeze-excitation, hardswish
        _torchvision("mobilenet_v3_small"),
        ["features.0", "features.1", "features.2", "features.4"],
        (3, 224, 224),
    ),
    "shufflenet_v2_x0_5": (  # channel split, concatenation and shuffle
        _torchvision("shufflenet_v2_x0_5"),
        ["maxpool", "stage2.0", "stage2.1"],
        (3, 224, 224),
    ),
    "resnext_dilated_4ch": (_grouped_dilated_4ch, ["maxpool", "layer1", "layer2", "layer3"], (4, 128, 128)),
    "squeezenet1_1": (_torchvision("squeezenet1_1"), ["features.2", "features.3", "features.4"], (3, 224, 224)),
    "stochastic_depth": (_StochasticDepthResidual, ["conv1", "conv2"], (3, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(NEW))
def test_traced_links_of_new_architectures_equal_autograd(name):
    build, layers, shape = NEW[name]
    arch = _traced_arch(name, layers, shape, build)
    torch.manual_seed(0)
    model = build().eval()
    _randomise_batchnorm(model)
    assert _check_against_autograd(model, arch, per_link=1) >= len(layers) - 1


# -- refusals ---------------------------------------------------------------------------------------------------


class _WithLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm([8, 16, 16])
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.norm(self.conv1(x)))


class _ChannelsLastLayerNorm(nn.Module):
    """ConvNeXt's block: permute to channels last, LayerNorm over channels, permute back."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x).permute(0, 2, 3, 1)
        return self.conv2(self.norm(x).permute(0, 3, 1, 2))


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        if x.sum() > 0:
            x = -x
        return self.conv2(x)


def test_an_op_with_no_rule_is_refused_in_one_line_naming_it():
    arch = _traced_arch("ln", ["conv1", "conv2"], (3, 16, 16), _WithLayerNorm)
    with pytest.raises(ExtractionError) as err:
        links(arch.build().eval(), arch)
    assert str(err.value) == "unsupported op in the path conv1 → conv2: torch.nn.LayerNorm at norm"


def test_a_refused_op_between_shape_ops_is_named_not_the_shape_op():
    """ConvNeXt's LayerNorm runs between two permutes: the refusal names the LayerNorm, not the permute after it
    (the zoo sweep's run 4 named torchvision convnext_tiny's `permute` before this)."""
    arch = _traced_arch("ln-cl", ["conv1", "conv2"], (3, 16, 16), _ChannelsLastLayerNorm)
    with pytest.raises(ExtractionError) as err:
        links(arch.build().eval(), arch)
    assert str(err.value) == "unsupported op in the path conv1 → conv2: torch.nn.LayerNorm at norm"


def test_a_model_fx_cannot_trace_is_refused_in_one_line():
    arch = _traced_arch("dd", ["conv1", "conv2"], (3, 16, 16), _DataDependent)
    with pytest.raises(ExtractionError) as err:
        links(arch.build().eval(), arch)
    message = str(err.value)
    assert message.startswith("test:dd: torch.fx cannot trace the model (TraceError: ") and "\n" not in message
