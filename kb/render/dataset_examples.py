"""Dataset examples: the top-k activating images of every channel of some layers, in one streamed pass.

Per batch, a forward hook on each requested layer takes each channel's maximum over positions and merges it
into a running top-k per channel (values, image index, position) with ``torch.topk``: memory stays at k per channel
whatever the size of the dataset. The pass stops after the deepest requested layer. Unreadable files are
skipped and counted; a folder with no readable image is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kb.render.hooks import StopForward, forward_hooks, run_until_stop
from kb.render.preprocess import preprocess_fn

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
STRIDED_READ_COST = 8  # reading one (image, channel) map of a channels-last activation, against a full pass


class NoImages(ValueError):
    pass


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load(path: Path | IO[bytes], size: int = 224) -> np.ndarray | None:
    """Shorter side resized to ``size``, centre crop; HxWx3 uint8, or None if the file is not an image."""
    try:
        with Image.open(path) as opened:
            im = opened.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


@dataclass
class TopK:
    values: torch.Tensor  # [k, C]
    images: torch.Tensor  # [k, C] image index
    positions: torch.Tensor  # [k, C] flat position in the layer's HxW
    shape: tuple[int, int]  # the layer's HxW


Batch = tuple[list[int], np.ndarray]  # (image indices, their images: NxHxWx3 uint8)


def batches(files: list[Path], batch: int, size: int = 224) -> Iterator[Batch]:
    """(indices into files, images) of readable files, ``batch`` at a time."""
    idx: list[int] = []
    imgs: list[np.ndarray] = []
    for i, path in enumerate(files):
        img = load(path, size)
        if img is None:
            continue
        idx.append(i)
        imgs.append(img)
        if len(imgs) == batch:
            yield idx, np.stack(imgs)
            idx, imgs = [], []
    if imgs:
        yield idx, np.stack(imgs)


def collect(
    model: torch.nn.Module,
    modules: list[str],
    stream: Iterable[Batch],
    k: int,
    preprocess: str = "imagenet",
    device: torch.device | str = "cpu",
    stop_after: str | None = None,
) -> tuple[dict[str, TopK], int]:
    """Running top-k per channel for each module path. ``stream`` yields (image indices, NxHxWx3 uint8).

    Each hook merges its layer while the activation is fresh. While many entries enter the top-k (the first
    batches) one ``max`` gives maxima and positions; once few do, ``amax`` (4x faster) gives the maxima and
    positions are read from the maps of the entries that entered, at most k per channel."""
    where = torch.device(device)
    pre = preprocess_fn(preprocess)
    found: dict[str, TopK] = {}
    seen = 0
    named = dict(model.named_modules())
    batch_images: list[torch.Tensor] = []
    dense: dict[str, bool] = {}

    def hook(path: str) -> Callable[[torch.nn.Module, object, torch.Tensor], None]:
        def inner(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            a = output.detach()
            if a.dim() == 2:
                a = a[:, :, None, None]
            b, c, h, w = a.shape
            flat = a.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view when channels-last: no copy
            old = found.get(path)
            argmax: torch.Tensor | None
            if old is None or dense.get(path, True):  # many entries will enter: maxima and positions at once
                values, argmax = flat.max(dim=1)  # [B, C]
            else:  # few will: maxima only, positions below for the entries that enter
                values, argmax = flat.amax(dim=1), None
            values = values.float()
            images = batch_images[0][:, None].expand(b, c)
            if old is not None:
                values = torch.cat([old.values, values])
                images = torch.cat([old.images, images])
            top = torch.topk(values, min(k, values.shape[0]), dim=0)  # [k, C]
            positions = torch.zeros_like(top.indices)
            if old is not None:
                kept = top.indices < old.values.shape[0]
                positions[kept] = old.positions.gather(0, top.indices.clamp(max=old.values.shape[0] - 1))[kept]
                fresh = ~kept
                row = top.indices - old.values.shape[0]
            else:
                fresh = torch.ones_like(top.indices, dtype=torch.bool)
                row = top.indices
            slot, channel = fresh.nonzero(as_tuple=True)
            if argmax is not None:
                positions[slot, channel] = argmax[row[slot, channel], channel]
            elif len(slot):  # read only the maps of the entries that entered (strided reads)
                positions[slot, channel] = flat[row[slot, channel], :, channel].argmax(dim=1)
            # next batch: one full pass is cheaper than this many strided map reads
            dense[path] = STRIDED_READ_COST * len(slot) > b * c
            found[path] = TopK(top.values, images.gather(0, top.indices), positions, (h, w))
            if path == stop_after:
                raise StopForward

        return inner

    with forward_hooks((named[p], hook(p)) for p in modules), torch.inference_mode():
        for indices, images in stream:
            x = torch.from_numpy(images).to(where).permute(0, 3, 1, 2).float().div_(255)
            batch_images[:] = [torch.tensor(indices, device=where)]
            run_until_stop(model, pre(x).contiguous(memory_format=torch.channels_last))
            seen += len(indices)
    if not seen:
        raise NoImages("no readable images in the dataset")
    return found, seen


def grid(files: list[Path], top: TopK, channel: int, size: int = 224, tile: int = 64) -> np.ndarray:
    """The channel's top-k images, each cropped around its maximum, as a square-ish grid."""
    h, w = top.shape
    stride = size / max(h, w)
    side = int(min(size, max(32, 3 * stride)))
    tiles = []
    for r in range(top.values.shape[0]):
        path = files[int(top.images[r, channel])]
        img = load(path, size)
        if img is None:  # read when its activations were collected, unreadable now
            raise NoImages(f"{path} is no longer a readable image")
        pos = int(top.positions[r, channel])
        cy, cx = (pos // w + 0.5) * size / h, (pos % w + 0.5) * size / w
        y0 = int(min(max(0, cy - side / 2), size - side))
        x0 = int(min(max(0, cx - side / 2), size - side))
        crop = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side]).resize((tile, tile), Image.Resampling.BILINEAR)
        tiles.append(np.asarray(crop))
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    out = np.full((rows * (tile + 2) + 2, cols * (tile + 2) + 2, 3), 255, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[2 + r * (tile + 2) : 2 + r * (tile + 2) + tile, 2 + c * (tile + 2) : 2 + c * (tile + 2) + tile] = t
    return out
