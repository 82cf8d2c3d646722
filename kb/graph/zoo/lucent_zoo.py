"""lucent's InceptionV1: the network the Circuits papers and OpenAI Microscope number (conv2d0 … mixed5b)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kb.graph.zoo.spec import Architecture, Branches, Conv, LayerSpec, Pool, Same, StateDict, Step

if TYPE_CHECKING:
    import torch

LRN = "local response normalisation taken as the identity"
MIXED = ("mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b")


def _mixed(b: str) -> Branches:
    return Branches(
        b,
        (
            (Conv(f"{b}_1x1_pre_relu_conv"),),
            (Conv(f"{b}_3x3_bottleneck_pre_relu_conv"), Conv(f"{b}_3x3_pre_relu_conv", (1, 1))),
            (Conv(f"{b}_5x5_bottleneck_pre_relu_conv"), Conv(f"{b}_5x5_pre_relu_conv", (2, 2))),
            (Pool(3, 1, (1, 1), f"{b}_pool"), Conv(f"{b}_pool_reduce_pre_relu_conv")),
        ),
    )


def _layers() -> tuple[LayerSpec, ...]:
    convs = tuple(
        LayerSpec(f"conv2d{i}", f"conv2d{i}", "conv", ("conv",), (f"conv2d{i}_pre_relu_conv", f"conv2d{i}_pre_relu"))
        for i in range(3)
    )
    mixed = tuple(LayerSpec(m, m, "inception", ("inception",), (m[len("mixed") :],)) for m in MIXED)
    return convs + mixed


def _trunk() -> tuple[Step, ...]:
    steps: list[Step] = [
        Conv("conv2d0_pre_relu_conv", (2, 2)),
        Same("conv2d0"),
        Pool(3, 2, (0, 0), "maxpool0"),
        Same("localresponsenorm0", LRN),
        Conv("conv2d1_pre_relu_conv"),
        Same("conv2d1"),
        Conv("conv2d2_pre_relu_conv", (1, 1)),
        Same("conv2d2"),
        Same("localresponsenorm1", LRN),
        Pool(3, 2, (0, 0), "maxpool1"),
        _mixed("mixed3a"),
        _mixed("mixed3b"),
        Pool(3, 2, (0, 0), "maxpool4"),
        *(_mixed(m) for m in ("mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e")),
        Pool(3, 2, (0, 0), "maxpool10"),
        _mixed("mixed5a"),
        _mixed("mixed5b"),
    ]
    return tuple(steps)


def _build() -> torch.nn.Module:
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    model: torch.nn.Module = InceptionV1(pretrained=False)
    return model


LUCID = "lucid"  # the one published set: Lucid's InceptionV1 (inception5h), as lucent ports it
WEIGHTS = {LUCID: LUCID, "DEFAULT": LUCID}  # weights name -> the weights it stands for


def _pretrained(name: str) -> tuple[str, StateDict]:
    """The weights called ``name`` (only Lucid's are published; DEFAULT stands for them)."""
    if name not in WEIGHTS:
        raise ValueError(
            f"lucent:inceptionv1 has no weights {name!r} (choose from {', '.join(WEIGHTS)}, "
            f"or use --weights PATH or --weights random)"
        )
    import torch
    from lucent.modelzoo.inceptionv1.InceptionV1 import model_urls

    state: StateDict = torch.hub.load_state_dict_from_url(model_urls["inceptionv1"], progress=True, map_location="cpu")
    return WEIGHTS[name], state


INCEPTIONV1 = Architecture(
    name="inceptionv1",
    source="lucent:inceptionv1",
    input_shape=(3, 224, 224),
    layers=_layers(),
    trunk=_trunk(),
    build=_build,
    pretrained=_pretrained,
    description="InceptionV1 (GoogLeNet) as trained by Lucid, the model of the Distill Circuits thread",
)

ARCHITECTURES = {"inceptionv1": INCEPTIONV1}
