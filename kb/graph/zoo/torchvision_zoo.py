"""torchvision architectures: significant layers and trunks, declared per architecture."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from kb.graph.zoo.spec import Architecture, BlockBranches, LayerSpec, M, Pool, StateDict, Step

if TYPE_CHECKING:
    import torch

IMAGENET = (3, 224, 224)


def _build(name: str, **kwargs: bool) -> torch.nn.Module:
    import torchvision

    model: torch.nn.Module = torchvision.models.get_model(name, weights=None, **kwargs)
    return model


def _pretrained(arch: str, name: str) -> tuple[str, StateDict]:
    """torchvision's weights ``name`` (DEFAULT resolves to the weights it stands for, which is what is recorded)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        weights = enum[name.split(".")[-1]]
    except KeyError:
        choices = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise ValueError(f"torchvision has no weights {name!r} for {arch} (choose from {choices})") from None
    state: StateDict = weights.get_state_dict(progress=True, check_hash=True)
    return str(weights.name), state


def _arch(
    name: str,
    layers: Iterable[LayerSpec],
    trunk: Iterable[Step],
    input_shape: tuple[int, int, int] = IMAGENET,
    ignore: tuple[str, ...] = (),
    description: str = "",
    blocks: Mapping[str, BlockBranches] | None = None,
    **build_kwargs: bool,
) -> Architecture:
    return Architecture(
        name=name,
        source=f"torchvision:{name}",
        input_shape=input_shape,
        layers=tuple(layers),
        trunk=tuple(trunk),
        build=partial(_build, name, **build_kwargs),
        pretrained=partial(_pretrained, name),
        ignore_keys=ignore,
        description=description,
        blocks=blocks or {},
    )


# -- GoogLeNet -------------------------------------------------------------------------------------------
_G_BLOCKS = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
GOOGLENET = _arch(
    "googlenet",
    [LayerSpec(f"conv{i}", f"conv{i}", "conv", ("conv",)) for i in (1, 2, 3)]
    + [LayerSpec(f"inception{b}", f"inception{b}", "inception", ("inception",), (b, f"mixed{b}")) for b in _G_BLOCKS],
    [
        M("conv1"),
        M("maxpool1"),
        M("conv2"),
        M("conv3"),
        M("maxpool2"),
        M("inception3a"),
        M("inception3b"),
        M("maxpool3"),
        *(M(f"inception4{c}") for c in "abcde"),
        M("maxpool4"),
        M("inception5a"),
        M("inception5b"),
    ],
    ignore=("aux1.", "aux2."),
    description="torchvision's GoogLeNet (BatchNorm, 3x3 in the '5x5' branch)",
    blocks={"Inception": lambda p: tuple((M(f"{p}.branch{i}"),) for i in range(1, 5))},
    aux_logits=False,
    init_weights=True,
)

# -- AlexNet ---------------------------------------------------------------------------------------------
_A_CONV = (0, 3, 6, 8, 10)
ALEXNET = _arch(
    "alexnet",
    [
        LayerSpec(f"conv{i + 1}", f"features.{c + 1}", "conv", ("conv",), (f"features.{c}",))
        for i, c in enumerate(_A_CONV)
    ]
    + [
        LayerSpec("fc6", "classifier.2", "linear", ("fc",), ("classifier.1",)),
        LayerSpec("fc7", "classifier.5", "linear", ("fc",), ("classifier.4",)),
    ],
    [M("features"), M("avgpool"), M("classifier")],
)


# -- VGG -------------------------------------------------------------------------------------------------
def _vgg(name: str, blocks: tuple[int, ...]) -> Architecture:
    layers, index = [], 0
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            layers.append(LayerSpec(f"conv{b}_{i}", f"features.{index + 1}", "conv", ("conv",), (f"features.{index}",)))
            index += 2
        index += 1  # max-pool
    layers += [
        LayerSpec("fc6", "classifier.1", "linear", ("fc",), ("classifier.0",)),
        LayerSpec("fc7", "classifier.4", "linear", ("fc",), ("classifier.3",)),
    ]
    return _arch(name, layers, [M("features"), M("avgpool"), M("classifier")])


VGG16 = _vgg("vgg16", (2, 2, 3, 3, 3))
VGG19 = _vgg("vgg19", (2, 2, 4, 4, 4))

# -- ResNet-50 -------------------------------------------------------------------------------------------
_R_BLOCKS = (3, 4, 6, 3)
RESNET50 = _arch(
    "resnet50",
    [LayerSpec("conv1", "relu", "conv", ("conv",), ("bn1",))]
    + [
        LayerSpec(f"layer{s}.{b}", f"layer{s}.{b}", "bottleneck", ("block",), (f"{s}.{b}",))
        for s, n in enumerate(_R_BLOCKS, start=1)
        for b in range(n)
    ],
    [M("conv1"), M("bn1"), M("relu"), M("maxpool"), M("layer1"), M("layer2"), M("layer3"), M("layer4")],
    description="torchvision's ResNet-50 (v1.5: stride in the 3x3 conv)",
)

# -- Inception v3 ----------------------------------------------------------------------------------------
_V3_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
_V3_MIXED = (
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


def _m(name: str) -> Callable[[str], Step]:
    return lambda p: M(f"{p}.{name}")


def _pool(size: int, stride: int, pad: int, op: str) -> Callable[[str], Step]:
    """A block's functional pooling (torchvision calls F.avg_pool2d / F.max_pool2d in its forward)."""
    return lambda p: Pool(size, stride, (pad, pad), f"{p} pool", op)


def _v3(*branches: list[Callable[[str], Step]]) -> BlockBranches:
    return lambda p: tuple(tuple(s(p) for s in b) for b in branches)


# Inception v3's blocks by type: each branch's modules in order (InceptionE's 3x3 branches split in two, and
# their split halves share the stem before them: each half is a term of its own).
_V3_BLOCKS: dict[str, BlockBranches] = {
    "InceptionA": _v3(
        [_m("branch1x1")],
        [_m("branch5x5_1"), _m("branch5x5_2")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3")],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
    "InceptionB": _v3(
        [_m("branch3x3")], [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3")], [_pool(3, 2, 0, "max")]
    ),
    "InceptionC": _v3(
        [_m("branch1x1")],
        [_m("branch7x7_1"), _m("branch7x7_2"), _m("branch7x7_3")],
        [_m(f"branch7x7dbl_{i}") for i in range(1, 6)],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
    "InceptionD": _v3(
        [_m("branch3x3_1"), _m("branch3x3_2")], [_m(f"branch7x7x3_{i}") for i in range(1, 5)], [_pool(3, 2, 0, "max")]
    ),
    "InceptionE": _v3(
        [_m("branch1x1")],
        [_m("branch3x3_1"), _m("branch3x3_2a")],
        [_m("branch3x3_1"), _m("branch3x3_2b")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3a")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3b")],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
}
INCEPTION_V3 = _arch(
    "inception_v3",
    [LayerSpec(s.lower(), s, "conv", ("conv",), (s,)) for s in _V3_STEM]
    + [LayerSpec(s.lower(), s, "inception", ("inception",), (s, s[-2:])) for s in _V3_MIXED],
    [
        M("Conv2d_1a_3x3"),
        M("Conv2d_2a_3x3"),
        M("Conv2d_2b_3x3"),
        M("maxpool1"),
        M("Conv2d_3b_1x1"),
        M("Conv2d_4a_3x3"),
        M("maxpool2"),
        *(M(s) for s in _V3_MIXED),
    ],
    input_shape=(3, 299, 299),
    ignore=("AuxLogits.",),
    blocks=_V3_BLOCKS,
    aux_logits=False,
    init_weights=True,
)

ARCHITECTURES = {a.name: a for a in (GOOGLENET, ALEXNET, VGG16, VGG19, RESNET50, INCEPTION_V3)}
