"""Every rendering use of lucent goes through here (the zoo builds lucent's models; nothing else imports lucent).

lucent is notebook code: ``render_vis`` registers a forward hook on every module at each call and never
removes them, shows images by default, takes no seed, and creates tensors on ``cuda:0`` whatever the model's
device. This module fixes all four: hooks are removed in ``finally``, nothing is shown, every render is
seeded, and tensors are made on the worker's device (lucent's module-level ``device`` is pointed there for the
call). It also gives lucent's redirected ReLUs a forward and backward without GPU synchronisation.

The workers' renderer (``kb.render.feature_vis``) calls no lucent code; ``plain_render_vis`` is lucent's own
loop, kept for comparison (bench/render.py).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import numpy as np
import torch

from kb.render.feature_vis import seed_everything


def lucent_version() -> str | None:
    try:
        import lucent
    except ImportError:  # pragma: no cover
        return None
    return lucent.__version__


@contextlib.contextmanager
def lucent_hooks_removed(model: torch.nn.Module) -> Iterator[None]:
    """For lucent's ``render_vis``, which adds a forward hook to every module and drops the handles: whatever
    forward hooks appear inside the block are removed when it ends. Our own hooks keep their handles
    (kb.render.hooks)."""
    before = {id(m): set(m._forward_hooks) for m in model.modules()}
    try:
        yield
    finally:
        for m in model.modules():
            for hook_id in set(m._forward_hooks) - before.get(id(m), set()):
                del m._forward_hooks[hook_id]


@contextlib.contextmanager
def lucent_on(device: torch.device) -> Iterator[None]:
    """Point lucent's module-level ``device`` (param.spatial, transform) at ``device`` for the block."""
    from lucent.optvis import transform
    from lucent.optvis.param import spatial

    saved = spatial.device, transform.device
    spatial.device = transform.device = torch.device(device)
    try:
        yield
    finally:
        spatial.device, transform.device = saved


class _RedirectedReLU(torch.autograd.Function):
    """lucent's RedirectedReLU with the same gradient (negative inputs pass 0.1 of it) computed with
    ``torch.where``: lucent's boolean-mask assignment synchronises with the GPU at every layer of every step
    (half the step time on an H200, measured with torch.profiler)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where(x < 0, grad * 0.1, grad)


def _fast_redirected(module, x):
    return _RedirectedReLU.apply(x)


def redirected_relus_without_sync(model: torch.nn.Module) -> int:
    """Give each of lucent's ``RedirectedReluLayer`` modules the synchronisation-free version (in place);
    returns how many."""
    n = 0
    for m in model.modules():
        if type(m).__name__ == "RedirectedReluLayer":
            m.forward = types.MethodType(_fast_redirected, m)
            n += 1
    return n


def plain_render_vis(
    model: torch.nn.Module,
    layer: str,
    unit: int,
    *,
    size: int = 128,
    steps: int = 512,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """lucent's ``render_vis`` with its defaults, one unit; seeded, headless, its hooks removed afterwards."""
    from lucent.optvis import param, render

    seed_everything(seed)
    with lucent_hooks_removed(model), lucent_on(device):
        images = render.render_vis(
            model,
            f"{layer}:{unit}",
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
    return (np.clip(images[-1][0], 0, 1) * 255 + 0.5).astype(np.uint8)


# Layer objectives (kb.render.layer_views) as lucent objectives: lucent 0.1.8 has neither Lucid's ``deepdream``
# nor its caricature objective ``dot_compare``, so they are written here with lucent's ``wrap_objective``, in
# lucent's sign convention (an objective is a loss: minimised). ``T(layer)`` is the layer's activations [N, C, H, W].
CARICATURE_COSSIM_POW = 1.0  # the dot product weighted by the cosine: the caricature's direction, not its size


def deepdream(layer: str):
    """Lucid's ``objectives.deepdream(layer)``: maximise the mean squared activation of the whole layer."""
    from lucent.optvis import objectives

    @objectives.wrap_objective()
    def deepdream(layer):
        def inner(T):
            return -(T(layer).float() ** 2).mean()

        return inner

    return deepdream(layer)


def dot_compare(layer: str, batch: int = 1, cossim_pow: float = CARICATURE_COSSIM_POW):
    """Lucid's caricature objective: image ``batch``'s activations at ``layer`` against image 0's (the target),
    their dot product weighted by their cosine similarity (floored at 0.1) to the power ``cossim_pow``."""
    from lucent.optvis import objectives

    @objectives.wrap_objective()
    def dot_compare(layer, batch, cossim_pow):
        def inner(T):
            acts = T(layer).float()
            x, target = acts[batch].flatten(), acts[0].flatten()
            dot = (x * target).sum()
            cossim = dot / (x.norm() * target.norm() + 1e-6)
            return -dot * cossim.clamp(min=0.1) ** cossim_pow

        return inner

    return dot_compare(layer, batch, cossim_pow)


def plain_render_deepdream(
    model: torch.nn.Module,
    layer: str,
    *,
    size: int = 128,
    steps: int = 512,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """lucent's own ``render_vis`` loop on the ``deepdream(layer)`` objective (``layer``: lucent's underscore
    name), for comparison (bench/layer_views.py); seeded, headless, its hooks removed afterwards."""
    from lucent.optvis import param, render

    seed_everything(seed)
    with lucent_hooks_removed(model), lucent_on(device):
        images = render.render_vis(
            model,
            deepdream(layer),
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
    return (np.clip(images[-1][0], 0, 1) * 255 + 0.5).astype(np.uint8)
