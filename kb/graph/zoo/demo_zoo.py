"""``demo:digits``: the model organism trained here, offline (kb.graph.zoo.digits_training), whose units mean
something: a small CNN on scikit-learn's handwritten digits.

Its weights are trained by the recipe from a seed (``kb import demo:digits [--seed N]``, the default weights), or
seeded random (``--weights random``), or a checkpoint. Trained weights are cached in ``KB_DATA_DIR/demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kb.graph.zoo.spec import Architecture, LayerSpec, M, StateDict

if TYPE_CHECKING:
    import torch

DATASET = "digits"  # the data set `kb import demo:digits` registers: the images the weights were trained on


def _build() -> torch.nn.Module:
    from kb.graph.zoo.digits_training import build

    return build()


def cache_dir() -> Path:
    from kb.settings import get_settings

    return get_settings().data_dir / "demo"


def _train(seed: int) -> tuple[str, StateDict]:
    from kb.graph.zoo.digits_training import trained

    done = trained(seed, cache_dir())
    return done.described(), done.model.state_dict()


def _images(folder: Path) -> Path:
    from kb.graph.zoo.digits_data import write_images

    return write_images(folder)


DIGITS = Architecture(
    name="digits",
    source="demo:digits",
    input_shape=(3, 32, 32),
    layers=(
        LayerSpec("conv1", "relu1", "conv", ("conv",)),  # after the ReLU, as lucent's InceptionV1 layers are
        LayerSpec("conv2", "relu2", "conv", ("conv",)),
        LayerSpec("conv3", "relu3", "conv", ("conv",)),
        LayerSpec("logits", "fc", "linear", ("fc",)),  # one unit per digit: logits:7 is "seven"
    ),
    trunk=tuple(
        M(p)
        for p in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "avgpool", "flatten", "fc")
    ),
    build=_build,
    train=_train,
    dataset=(DATASET, _images),
    description="demo model organism: a 3-conv CNN trained here on scikit-learn's 8x8 handwritten digits "
    "(32 px, grey in 3 channels, [0,1])",
)

ARCHITECTURES = {"digits": DIGITS}
