"""Rewrites that make a frozen model cheaper to differentiate with respect to its input, without changing
what it computes (up to float rounding). Used once per worker process by ``model_cache.prepare``.

- ``fold_batchnorm``: an eval-mode BatchNorm right after a convolution becomes part of the convolution's
  weights and bias (one op instead of two, forward and backward). Pairs are found by structure (``convN`` /
  ``bnN`` siblings, as torchvision's GoogLeNet, Inception and ResNet name them; consecutive modules of a
  ``Sequential``), and the folded model is checked against the original on a random image: if it does not
  match, the original is kept.
- ``polyphase_input_convs``: the gradient of a strided convolution over a 3-channel image is a transposed
  convolution with 3 output channels, which oneDNN computes at a fifth of the forward speed on the CPU
  (GoogLeNet's 7x7/2 stem: 50 ms backward against 15 ms forward for 8 images). Written as one stride-1
  convolution with ``3 * stride**2`` output channels followed by a pixel shuffle, it takes 23 ms.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    pairs: list[tuple[nn.Module, str, str]] = []
    for parent in model.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs += [
                (parent, a, b)
                for a, b in itertools.pairwise(names)
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d)
            ]
            continue
        for name, child in children.items():
            m = re.fullmatch(r"conv(\d*)", name)
            bn = f"bn{m.group(1)}" if m else ""
            if m and isinstance(child, nn.Conv2d) and isinstance(children.get(bn), nn.BatchNorm2d):
                pairs.append((parent, name, bn))
    return pairs


def _same_outputs(a: nn.Module, b: nn.Module, size: int) -> bool:
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            ya, yb = a(x), b(x)
    except Exception:
        return False
    ya, yb = (ya[0] if isinstance(ya, tuple) else ya), (yb[0] if isinstance(yb, tuple) else yb)
    return bool(torch.allclose(ya, yb, rtol=1e-3, atol=1e-3 * float(ya.abs().max())))


def fold_batchnorm(model: nn.Module, check_size: int = 224) -> nn.Module:
    """A copy of ``model`` (on the CPU, eval mode) with each conv+BatchNorm pair folded into one conv, or
    ``model`` itself when there is nothing to fold or the folded copy computes something else."""
    model = model.eval()
    if not _conv_bn_pairs(model):
        return model
    folded = copy.deepcopy(model)
    for parent, conv, bn in _conv_bn_pairs(folded):
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return folded if _same_outputs(model, folded, check_size) else model


class _PolyphaseConvGrad(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, stride, padding)`` whose input gradient is one stride-1 convolution of
    the padded output gradient with the phase kernels, then a pixel shuffle. Weights get no gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: _PolyphaseInputConv) -> torch.Tensor:
        ctx.conv = conv
        ctx.in_hw = x.shape[-2:]
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        conv: _PolyphaseInputConv = ctx.conv
        kernel, before, after = conv.phase_kernel(grad)
        s, (h, w) = conv.stride[0], ctx.in_hw
        # phase-grid row a (input rows s*a .. s*a+s-1) reads output rows a-before .. a+after; the conv pads
        # symmetrically (no padded copy of the gradient) and the rows it computes beyond those are cut off
        rows, cols = -(-h // s), -(-w // s)
        pad = max(before, after + max(0, rows - grad.shape[-2]), after + max(0, cols - grad.shape[-1]))
        phases = F.conv2d(grad.contiguous(memory_format=torch.channels_last), kernel, padding=pad)
        o = pad - before
        return F.pixel_shuffle(phases[..., o : o + rows, o : o + cols], s)[..., :h, :w], None


class _PolyphaseInputConv(nn.Conv2d):
    """A square, strided, ungrouped, frozen conv over the image whose backward is ``_PolyphaseConvGrad``."""

    _phase: tuple[tuple[torch.device, torch.dtype], torch.Tensor, int, int]

    def phase_kernel(self, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        key = (like.device, like.dtype)
        if getattr(self, "_phase", (None,))[0] != key:
            self._phase = (
                key,
                *_phase_kernel(self.weight.detach().to(like.device, like.dtype), self.stride[0], int(self.padding[0])),
            )
        return self._phase[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            return super().forward(x)
        out: torch.Tensor = _PolyphaseConvGrad.apply(x, self)
        return out


def _phase_kernel(w: torch.Tensor, s: int, pad: int) -> tuple[torch.Tensor, int, int]:
    """Kernel K [C*s*s, O, T, T] and the padding (before, after) such that, with g padded by it,
    ``pixel_shuffle(conv2d(g, K), s)`` is the input gradient of ``conv2d(x, w, stride=s, padding=pad)``
    for output gradient g. Phase r of input row p = s*a + r receives w[:, :, ky] from output row a + d where
    ky = r + pad - s*d."""
    out_ch, in_ch, k, _ = w.shape
    taps = [d for r in range(s) for d in range(-k, k + 1) if 0 <= r + pad - s * d < k]
    dmin, dmax = min(taps), max(taps)
    t = dmax - dmin + 1
    kernel = w.new_zeros(in_ch, s, s, out_ch, t, t)
    for r in range(s):
        for q in range(s):
            for ty in range(t):
                for tx in range(t):
                    ky, kx = r + pad - s * (ty + dmin), q + pad - s * (tx + dmin)
                    if 0 <= ky < k and 0 <= kx < k:
                        kernel[:, r, q, :, ty, tx] = w[:, :, ky, kx].T
    kernel = kernel.reshape(in_ch * s * s, out_ch, t, t).contiguous(memory_format=torch.channels_last)
    return kernel, -dmin, dmax


def _polyphase_ok(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.in_channels <= 4
        and m.groups == 1
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
        and m.padding[0] == m.padding[1]
        and m.stride[0] == m.stride[1] > 1
        and m.kernel_size[0] == m.kernel_size[1]
    )


def polyphase_input_convs(model: nn.Module) -> int:
    """Give every strided conv over at most 4 channels the polyphase backward (in place); returns how many."""
    n = 0
    for m in model.modules():
        if _polyphase_ok(m):
            m.__class__ = _PolyphaseInputConv
            n += 1
    return n
