"""The images of the demo model (``demo:digits``): scikit-learn's 1,797 handwritten digits (8x8, 0..16), offline.

Each image is upsampled to ``SIZE`` px (bilinear), scaled to [0, 1] and quantised to 8 bits, then repeated
into three identical channels (grey as RGB: the renderers and dataset passes work on RGB images). The tensor the
model trains on is exactly what the PNG files hold, so a dataset pass over the files sees the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

SIZE = 32  # px, from 8x8
HELD_OUT = 360  # images held out for the accuracy, of 1,797
SPLIT_SEED = 0  # the split is fixed: it does not move with the training seed


def pixels() -> tuple[np.ndarray, np.ndarray]:
    """(N x SIZE x SIZE uint8 grey images, N labels), in scikit-learn's order."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    big = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    grey = (big[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return grey, digits.target.astype(np.int64)


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """(N x 3 x SIZE x SIZE float images in [0, 1], grey in three channels; N int64 labels)."""
    import torch

    grey, labels = pixels()
    x = torch.from_numpy(grey).float().div_(255)[:, None].expand(-1, 3, -1, -1).contiguous()
    return x, torch.from_numpy(labels)


def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a fixed permutation (``SPLIT_SEED``), the last ``HELD_OUT`` held out."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[:-HELD_OUT].sort().values, order[-HELD_OUT:].sort().values


def write_images(folder: Path) -> Path:
    """The images as ``NNNN-L.png`` (number in scikit-learn's order, then the label) under ``folder``: sorted by
    name, file i is image i, as dataset examples number them. Files already there are kept."""
    from PIL import Image

    grey, labels = pixels()
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(grey, labels, strict=True)):
        path = folder / f"{i:04d}-{label}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            Image.fromarray(img).convert("RGB").save(tmp, format="PNG")
            tmp.replace(path)
    return folder
