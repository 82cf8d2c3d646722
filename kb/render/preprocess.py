"""What a model expects of its input image: lucent's InceptionV1 (Lucid's) takes [-117, 138], torchvision's
models ImageNet-normalised values, the demo model (demo:digits) [0, 1] as it is. Images arrive in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch


def preprocess_kind(source: str) -> str:
    """The preprocessing of the model imported from ``source`` (``lucent:inceptionv1``, ``torchvision:...``,
    ``demo:digits``)."""
    if source.startswith("demo:"):
        return "unit"
    return "inceptionv1" if source.startswith("lucent:") else "imagenet"


def preprocess_fn(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "inceptionv1":  # Lucid's InceptionV1 takes [-117, 138]
        return lambda x: x * 255 - 117
    if kind == "unit":  # the demo model trains on [0, 1] as it is
        return lambda x: x
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return lambda x: (x - mean.to(x.device)) / std.to(x.device)
