"""Linear maps between feature maps, and how they compose.

This module is the arithmetic behind every connection weight. It is numpy-only (no torch), so that the API
can compute an edge's kernel on demand from the factors stored at import.

A map sends an input feature map ``x[c, y, x]`` to ``out[n, p, q]``::

    out[n, p, q] = sum_{c,u,v} W[n, c, u, v] * x[c, p*sh - ph + u, q*sw - pw + v]

``Dense`` holds W (channel-mixing, e.g. a conv or a linear layer, BatchNorm scale folded in);
``Spatial`` holds a channel-wise filter f (W = I ⊗ f), e.g. a pooling window linearised as its average.

``compose(a, b)`` is the map "apply a, then b". The result of composing the chain of a branch is its
*expanded kernel*: K = W[target, source] is the spatial kernel through which a source channel reaches a
target channel, with ReLUs taken as the identity (Distill Circuits thread, "Visualizing Weights").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Pair = tuple[int, int]
Array = npt.NDArray[np.floating[Any]]  # float32 from a model; float64 where a test composes exactly


@dataclass(frozen=True)
class Dense:
    weight: Array  # [out, in, kh, kw]
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)  # offset of the window's first row/column before p*stride
    parametric: bool = True  # a layer's own parameters (conv, linear), not a folded BatchNorm scale
    source: str = ""  # module path it came from, for messages

    @property
    def size(self) -> Pair:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True)
class Spatial:
    filter: Array  # [kh, kw], shared by every channel
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)
    source: str = ""
    parametric: bool = field(default=False, init=False)

    @property
    def size(self) -> Pair:
        return self.filter.shape[0], self.filter.shape[1]


Op = Dense | Spatial


def box(size: Pair, stride: Pair, pad: Pair, source: str = "", dtype: npt.DTypeLike = np.float32) -> Spatial:
    """A pooling window linearised as its average (max-pooling is treated the same way)."""
    kh, kw = size
    return Spatial(np.full((kh, kw), 1.0 / (kh * kw), dtype=dtype), (stride[0], stride[1]), (pad[0], pad[1]), source)


def identity(dtype: npt.DTypeLike = np.float32) -> Spatial:
    return Spatial(np.ones((1, 1), dtype=dtype))


def _geometry(a: Op, b: Op) -> tuple[Pair, Pair, Pair]:
    (ah, aw), (bh, bw) = a.size, b.size
    (sah, saw), (sbh, sbw) = a.stride, b.stride
    size = (ah + (bh - 1) * sah, aw + (bw - 1) * saw)
    stride = (sah * sbh, saw * sbw)
    pad = (a.pad[0] + b.pad[0] * sah, a.pad[1] + b.pad[1] * saw)
    return size, stride, pad


def folded_size(ops: Sequence[Op]) -> Pair:
    """The kernel size of ``fold(ops)``, from the geometry alone."""
    if not ops:
        return (1, 1)
    acc = ops[-1]
    for op in reversed(ops[:-1]):
        size, stride, pad = _geometry(op, acc)
        acc = Spatial(np.empty(size, np.float32), stride, pad)
    return acc.size


def compose(a: Op, b: Op) -> Op:
    """The map 'a, then b'."""
    size, stride, pad = _geometry(a, b)
    (ah, aw), (bh, bw) = a.size, b.size
    sah, saw = a.stride
    if isinstance(a, Spatial):
        if isinstance(b, Spatial):
            f = np.zeros(size, dtype=np.result_type(a.filter, b.filter))
            for u in range(bh):
                for v in range(bw):
                    f[u * sah : u * sah + ah, v * saw : v * saw + aw] += b.filter[u, v] * a.filter
            return Spatial(f, stride, pad)
        # b is Dense: same channels in and out of a
        w = np.zeros(b.weight.shape[:2] + size, dtype=np.result_type(a.filter, b.weight))
        if ah * aw < bh * bw:  # e.g. a 2x2 pool before a 7x7 layer: a few passes over w rather than 49 windows
            for i in range(ah):
                for j in range(aw):
                    w[:, :, i : i + (bh - 1) * sah + 1 : sah, j : j + (bw - 1) * saw + 1 : saw] += (
                        a.filter[i, j] * b.weight
                    )
            return Dense(w, stride, pad, b.parametric or a.parametric)
        for u in range(bh):
            for v in range(bw):
                w[:, :, u * sah : u * sah + ah, v * saw : v * saw + aw] += b.weight[:, :, u, v, None, None] * a.filter
        return Dense(w, stride, pad, b.parametric or a.parametric)
    if isinstance(b, Spatial):  # a is Dense
        w = np.zeros(a.weight.shape[:2] + size, dtype=np.result_type(a.weight, b.filter))
        for u in range(bh):
            for v in range(bw):
                w[:, :, u * sah : u * sah + ah, v * saw : v * saw + aw] += b.filter[u, v] * a.weight
        return Dense(w, stride, pad, a.parametric)
    if b.in_channels != a.out_channels:
        raise ValueError(
            f"cannot compose {a.source or 'a map'} ({a.out_channels} channels out) "
            f"with {b.source or 'a map'} ({b.in_channels} channels in)"
        )
    m = a.out_channels
    w = np.zeros((b.out_channels, a.in_channels, *size), dtype=np.result_type(a.weight, b.weight))
    a_flat = a.weight.reshape(m, -1)
    for u in range(bh):
        for v in range(bw):
            part = (b.weight[:, :, u, v] @ a_flat).reshape(b.out_channels, a.in_channels, ah, aw)
            w[:, :, u * sah : u * sah + ah, v * saw : v * saw + aw] += part
    return Dense(w, stride, pad, True)


def select_rows(rows: np.ndarray | list[int], n: int, dtype: npt.DTypeLike = np.float32) -> Dense:
    """A 1x1 map that picks output channels ``rows`` out of ``n``: composing with it restricts a chain."""
    picked = np.asarray(rows)
    w = np.zeros((len(picked), n, 1, 1), dtype=dtype)
    w[np.arange(len(picked)), picked, 0, 0] = 1.0
    return Dense(w, parametric=False)


def fold(ops: list[Op], rows: np.ndarray | list[int] | None = None, channels: int | None = None) -> Op:
    """Compose a chain right to left, optionally restricted to some of its output channels.

    Right to left keeps every intermediate at (selected outputs x input channels), which is what both
    the import (all targets of a branch) and the API (one target) need.
    """
    if not ops:
        acc: Op = identity()
    else:
        acc = ops[-1]
    rest = ops[:-1]
    if rows is not None:
        if isinstance(acc, Dense) and ops:
            acc = Dense(acc.weight[np.asarray(rows)], acc.stride, acc.pad, acc.parametric, acc.source)
        else:
            if channels is None:
                raise ValueError("selecting rows of a channel-wise chain needs the channel count")
            acc = compose(acc, select_rows(rows, channels)) if ops else select_rows(rows, channels)
    for op in reversed(rest):
        acc = compose(op, acc)
    return acc


def to_dense(op: Op, channels: int) -> Dense:
    if isinstance(op, Dense):
        return op
    w = np.zeros((channels, channels, *op.size), dtype=op.filter.dtype)
    idx = np.arange(channels)
    w[idx, idx] = op.filter
    return Dense(w, op.stride, op.pad, False)


def add(ops: list[Dense]) -> Dense:
    """Sum of maps with the same stride, their windows aligned (e.g. a residual branch plus its shortcut)."""
    if len(ops) == 1:
        return ops[0]
    strides = {o.stride for o in ops}
    if len(strides) != 1:
        raise ValueError(f"cannot add maps with different strides {sorted(strides)}")
    top = min(-o.pad[0] for o in ops)
    left = min(-o.pad[1] for o in ops)
    bottom = max(-o.pad[0] + o.size[0] for o in ops)
    right = max(-o.pad[1] + o.size[1] for o in ops)
    shape = ops[0].weight.shape[:2]
    w = np.zeros((*shape, bottom - top, right - left), dtype=ops[0].weight.dtype)
    for o in ops:
        y, x = -o.pad[0] - top, -o.pad[1] - left
        w[:, :, y : y + o.size[0], x : x + o.size[1]] += o.weight
    return Dense(w, ops[0].stride, (-top, -left), any(o.parametric for o in ops))
