"""PNG encoding and the weight images (a kernel, a neuron's strongest input kernels as small multiples)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(rgb: np.ndarray) -> bytes:
    """HxWx3 uint8 -> PNG bytes (deterministic: no timestamps, fixed compression)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def kernel_rgb(kernel: np.ndarray, scale: float | None = None, cell: int = 12) -> np.ndarray:
    """A 2-D kernel as red (negative) / blue (positive) cells on white, symmetric around zero."""
    k = np.asarray(kernel, dtype=np.float64)
    s = scale if scale else (np.abs(k).max() or 1.0)
    v = np.clip(k / s, -1, 1)
    rgb = np.ones((*k.shape, 3))
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb[..., 0] -= pos  # positive: towards blue
    rgb[..., 1] -= pos + neg
    rgb[..., 2] -= neg  # negative: towards red
    rgb = np.clip(rgb, 0, 1)
    return np.kron((rgb * 255 + 0.5).astype(np.uint8), np.ones((cell, cell, 1), dtype=np.uint8))


def small_multiples(kernels: list[np.ndarray], columns: int = 5, gap: int = 4) -> np.ndarray:
    """Kernels side by side on one shared scale (so strengths compare), in rows of ``columns``."""
    scale = max(float(np.abs(k).max()) for k in kernels) or 1.0
    tiles = [kernel_rgb(k, scale, cell=max(4, 60 // max(k.shape))) for k in kernels]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    out = np.full((rows * (h + gap) + gap, min(columns, len(tiles)) * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out
