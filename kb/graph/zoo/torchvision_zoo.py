"""torchvision architectures: significant layers and trunks, declared per architecture."""

from __future__ import annotations

from functools import partial

from kb.graph.zoo.spec import Architecture, LayerSpec, M

IMAGENET = (3, 224, 224)


def _build(name: str, **kwargs):
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kwargs)


def _pretrained(arch: str, name: str) -> dict:
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        weights = enum[name.split(".")[-1]]
    except KeyError:
        choices = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise ValueError(f"torchvision has no weights {name!r} for {arch} (choose from {choices})") from None
    return weights.get_state_dict(progress=True, check_hash=True)


def _arch(name: str, layers, trunk, input_shape=IMAGENET, ignore=(), description="", **build_kwargs):
    import_names = {
        "googlenet": ("IMAGENET1K_V1",),
        "alexnet": ("IMAGENET1K_V1",),
        "vgg16": ("IMAGENET1K_V1",),
        "vgg19": ("IMAGENET1K_V1",),
        "resnet50": ("IMAGENET1K_V1", "IMAGENET1K_V2"),
        "inception_v3": ("IMAGENET1K_V1",),
    }
    return Architecture(
        name=name,
        source=f"torchvision:{name}",
        input_shape=input_shape,
        layers=tuple(layers),
        trunk=tuple(trunk),
        build=partial(_build, name, **build_kwargs),
        pretrained=partial(_pretrained, name),
        weight_names=("DEFAULT", *import_names.get(name, ())),
        ignore_keys=tuple(ignore),
        description=description,
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
    aux_logits=False,
    init_weights=True,
)

ARCHITECTURES = {a.name: a for a in (GOOGLENET, ALEXNET, VGG16, VGG19, RESNET50, INCEPTION_V3)}
