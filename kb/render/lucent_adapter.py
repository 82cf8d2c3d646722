"""Every rendering use of lucent goes through here (the zoo builds lucent's models; nothing else imports lucent).

lucent is notebook code: ``render_vis`` registers a forward hook on every module at each call and never
removes them, shows images by default, takes no seed, and creates tensors on ``cuda:0`` whatever the model's
device. This module fixes all four: nothing is shown, every render is seeded, and each call into lucent runs
inside ``lucent_call``: under one lock (lucent's settings are the process's, not the call's), lucent's
module-level settings (``LUCENT_GLOBALS``: its ``device``s) point at the worker's device for the call, and when
the call ends, however it ends, they are restored and the hooks lucent added are removed. It also gives lucent's
redirected ReLUs a forward and backward without GPU synchronisation.

The workers' renderer (``kb.render.feature_vis``) calls no lucent code; ``plain_render_vis`` is lucent's own
loop, kept for comparison (bench/render.py).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from kb.render.feature_vis import seed_everything

# lucent's module-level settings the adapter sets for a call, as (module, attribute): where param.spatial and
# transform make their tensors (lucent sets both to cuda:0 at import when there is a GPU, else the CPU)
LUCENT_GLOBALS: tuple[tuple[str, str], ...] = (
    ("lucent.optvis.param.spatial", "device"),
    ("lucent.optvis.transform", "device"),
)
# held for the whole of a call into lucent: two threads' calls would otherwise set (and restore) the same globals
_lucent_lock = threading.RLock()

# a lucent objective: called with lucent's hook (a layer name -> its activations), returns the loss
Activations = Callable[[str], torch.Tensor]


def lucent_version() -> str | None:
    try:
        import lucent
    except ImportError:  # pragma: no cover
        return None
    return str(lucent.__version__)


def lucent_globals() -> dict[str, Any]:
    """The values of ``LUCENT_GLOBALS`` now, by ``module.attribute``."""
    return {f"{m}.{a}": getattr(importlib.import_module(m), a) for m, a in LUCENT_GLOBALS}


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
def lucent_on(device: torch.device | str) -> Iterator[None]:
    """Point lucent's module-level ``device``s (``LUCENT_GLOBALS``) at ``device`` for the block, under the
    adapter's lock; they are restored when it ends, however it ends."""
    with _lucent_lock:
        modules = [(importlib.import_module(m), a) for m, a in LUCENT_GLOBALS]
        saved = [(module, a, getattr(module, a)) for module, a in modules]
        try:
            for module, a in modules:
                setattr(module, a, torch.device(device))
            yield
        finally:
            for module, a, value in reversed(saved):
                setattr(module, a, value)


@contextlib.contextmanager
def lucent_call(model: torch.nn.Module, device: torch.device | str) -> Iterator[None]:
    """One call into lucent on ``model``: under the adapter's lock, lucent's globals on ``device``; when the
    block ends, however it ends, the globals are restored and the hooks lucent added to ``model`` removed."""
    with _lucent_lock, lucent_hooks_removed(model), lucent_on(device):
        yield


class _RedirectedReLU(torch.autograd.Function):
    """lucent's RedirectedReLU with the same gradient (negative inputs pass 0.1 of it) computed with
    ``torch.where``: lucent's boolean-mask assignment synchronises with the GPU at every layer of every step
    (half the step time on an H200, measured with torch.profiler)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where(x < 0, grad * 0.1, grad)


def _fast_redirected(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _RedirectedReLU.apply(x)
    return out


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

    with lucent_call(model, device):
        seed_everything(seed)
        images = render.render_vis(
            model,
            f"{layer}:{unit}",
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
    return _to_uint8(images[-1][0])


# Layer objectives (kb.render.layer_views) as lucent objectives: lucent 0.1.8 has neither Lucid's ``deepdream``
# nor its caricature objective ``dot_compare``, so they are written here with lucent's ``wrap_objective``, in
# lucent's sign convention (an objective is a loss: minimised). ``T(layer)`` is the layer's activations [N, C, H, W].
CARICATURE_COSSIM_POW = 1.0  # the dot product weighted by the cosine: the caricature's direction, not its size


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """lucent's float image in [0, 1] (HWC) as 8-bit pixels."""
    out: np.ndarray = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out


def deepdream(layer: str) -> Any:
    """Lucid's ``objectives.deepdream(layer)``: maximise the mean squared activation of the whole layer. Returns
    a lucent ``Objective``."""
    from lucent.optvis import objectives

    @objectives.wrap_objective()  # type: ignore[untyped-decorator]  # lucent is untyped
    def deepdream(layer: str) -> Callable[[Activations], torch.Tensor]:
        def inner(T: Activations) -> torch.Tensor:
            return -(T(layer).float() ** 2).mean()

        return inner

    return deepdream(layer)


def dot_compare(layer: str, batch: int = 1, cossim_pow: float = CARICATURE_COSSIM_POW) -> Any:
    """Lucid's caricature objective: image ``batch``'s activations at ``layer`` against image 0's (the target),
    their dot product weighted by their cosine similarity (floored at 0.1) to the power ``cossim_pow``. Returns a
    lucent ``Objective``."""
    from lucent.optvis import objectives

    @objectives.wrap_objective()  # type: ignore[untyped-decorator]  # lucent is untyped
    def dot_compare(layer: str, batch: int, cossim_pow: float) -> Callable[[Activations], torch.Tensor]:
        def inner(T: Activations) -> torch.Tensor:
            acts = T(layer).float()
            x, target = acts[batch].flatten(), acts[0].flatten()
            dot = (x * target).sum()
            cossim = dot / (x.norm() * target.norm() + 1e-6)
            weight: torch.Tensor = cossim.clamp(min=0.1) ** cossim_pow
            return -dot * weight

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

    with lucent_call(model, device):
        seed_everything(seed)
        images = render.render_vis(
            model,
            deepdream(layer),
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
    return _to_uint8(images[-1][0])
