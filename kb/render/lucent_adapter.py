"""Every use of lucent goes through here.

lucent is notebook code: ``render_vis`` registers a forward hook on every module at each call and never
removes them, shows images by default, takes no seed, and creates tensors on ``cuda:0`` whatever the model's
device. This module fixes all four: hooks are removed in ``finally``, nothing is shown, every render is
seeded, tensors are made on the worker's device (lucent's module-level ``device`` is pointed there for the
call), and models are prepared once per process by the caller (``prepare``).

``render_units`` is the renderer the workers use. It is lucent's recipe (FFT parameterisation, decorrelated
colour, standard transforms, Adam, channel or neuron objective, upsampling to 224 px) run differently: many
units of one layer in one batched optimisation (one image per unit, each with its own objective), the forward
pass stopped at the target layer, no weight gradients, channels-last memory, a model rewritten for cheaper
input gradients (``model_rewrites``) and the transforms without kornia (``transforms``). It calls no lucent
code; lucent's models (``lucent:inceptionv1``) are built by the zoo. ``plain_render_vis`` is lucent's own
loop, kept for comparison (bench/render.py).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

from kb.render.hooks import forward_hooks, run_until_stop, stop_at

COLOR_CORRELATION = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION /= np.max(np.linalg.norm(COLOR_CORRELATION, axis=0))


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def prepare(
    model: torch.nn.Module, device: torch.device, channels_last: bool = True, rewrites: bool = True, bf16: bool = False
) -> torch.nn.Module:
    """Eval mode, no weight gradients, on ``device``, channels-last, lucent's redirected ReLUs without GPU
    synchronisation, BatchNorm folded into the convolutions, and on the CPU the image convolution's gradient
    computed in polyphase form (``model_rewrites``): once per worker process.

    ``bf16``: the weights are cast once, here. Under autocast alone they would be cast at every step, since
    autocast caches only casts of weights that require gradients (frozen weights do not); the image and its
    optimiser stay float32."""
    import types

    from kb.render.model_rewrites import fold_batchnorm, polyphase_input_convs

    device = torch.device(device)
    model = model.eval().cpu()
    if rewrites:
        model = fold_batchnorm(model)
        if device.type == "cpu":
            polyphase_input_convs(model)
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if type(m).__name__ == "RedirectedReluLayer":
            m.forward = types.MethodType(_fast_redirected, m)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if bf16:
        model = model.to(torch.bfloat16)
    return model


def preprocess_fn(kind: str):
    if kind == "inceptionv1":  # Lucid's InceptionV1 takes [-117, 138]
        return lambda x: x * 255 - 117
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return lambda x: (x - mean.to(x.device)) / std.to(x.device)


def _fft_image(batch: int, size: int, seeds: list[int], device, sd: float = 0.01):
    """lucent's FFT parameterisation, one seeded generator per image (an image does not depend on its batch)."""
    h = w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1 + (w % 2)]
    freqs = np.sqrt(fx * fx + fy * fy)
    init = (
        torch.stack([torch.randn((3, *freqs.shape, 2), generator=torch.Generator().manual_seed(s)) * sd for s in seeds])
        .to(device)
        .requires_grad_(True)
    )
    scale = torch.tensor(1.0 / np.maximum(freqs, 1.0 / max(w, h)), dtype=torch.float32)[None, None, ..., None]
    scale = scale.to(device)

    def image():
        spectrum = torch.view_as_complex((scale * init).contiguous())
        return torch.fft.irfftn(spectrum, s=(h, w), norm="ortho")[:batch, :3, :h, :w] / 4.0

    return [init], image


def _pixel_image(batch: int, size: int, seeds: list[int], device, sd: float = 0.01):
    init = (
        torch.stack([torch.randn((3, size, size), generator=torch.Generator().manual_seed(s)) * sd for s in seeds])
        .to(device)
        .requires_grad_(True)
    )
    return [init], lambda: init


def _to_rgb(image_f, decorrelate: bool, device):
    matrix = torch.tensor(COLOR_CORRELATION.T, device=device)

    def inner():
        x = image_f()
        if decorrelate:
            x = (matrix.T @ x.reshape(x.shape[0], 3, -1)).reshape(x.shape)  # 8x faster than permute @ on a CPU
        return torch.sigmoid(x)

    return inner


def render_units(
    model: torch.nn.Module,
    module_path: str,
    units: list[int],
    *,
    size: int = 128,
    steps: int = 512,
    seed: int = 0,
    parameterization: str = "fft",
    transforms: str = "standard",
    lr: float = 0.05,
    negative: bool = False,
    neuron: bool = False,
    upsample: int = 224,
    preprocess: str = "imagenet",
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    autocast: bool = False,
    max_batch: int = 0,
    progress=None,
) -> list[np.ndarray]:
    """One optimisation for all ``units`` of one layer (or one per ``max_batch`` of them): image i maximises
    (or, ``negative``, minimises) unit i's mean activation (or, ``neuron``, its activation at the centre
    position). Returns HxWx3 uint8 arrays. A unit's image depends on the seed and the unit, not on the batch
    it was rendered in: its initial image has its own generator and every batch replays the same transforms."""
    target = dict(model.named_modules())[module_path]
    chunk = max_batch if max_batch > 0 else max(1, len(units))
    chunks = [units[lo : lo + chunk] for lo in range(0, len(units), chunk)]
    out: list[np.ndarray] = []
    for c, part in enumerate(chunks):
        report = (
            None if progress is None else (lambda step, total, c=c: progress(c * total + step, len(chunks) * total))
        )
        out += _optimise(
            model,
            target,
            part,
            size=size,
            steps=steps,
            seed=seed,
            parameterization=parameterization,
            transforms=transforms,
            lr=lr,
            negative=negative,
            neuron=neuron,
            upsample=upsample,
            preprocess=preprocess,
            device=torch.device(device),
            channels_last=channels_last,
            autocast=autocast,
            progress=report,
        )
    return out


def _optimise(
    model,
    target,
    units,
    *,
    size,
    steps,
    seed,
    parameterization,
    transforms,
    lr,
    negative,
    neuron,
    upsample,
    preprocess,
    device,
    channels_last,
    autocast,
    progress,
) -> list[np.ndarray]:
    from kb.render import transforms as T

    n = len(units)
    dtype = next(model.parameters()).dtype
    seed_everything(seed)
    make = _fft_image if parameterization == "fft" else _pixel_image
    params, raw = make(n, size, [seed * 1_000_003 + u for u in units], device)
    image_f = _to_rgb(raw, True, device)
    chain = [T.standard] if transforms == "standard" else []
    pre = preprocess_fn(preprocess)
    up = None
    if upsample and upsample != size:
        up = torch.nn.Upsample(size=upsample, mode="bilinear", align_corners=True)
    index = torch.tensor(units, device=device)
    sign = 1.0 if negative else -1.0
    optimizer = torch.optim.Adam(params, lr=lr)
    captured = {}

    with forward_hooks([stop_at(target, lambda output: captured.update(act=output))]):
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            x = image_f()
            for t in chain:
                x = t(x)
            if up is not None:
                x = up(x)
            x = pre(x).to(dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                run_until_stop(model, x)
            act = captured.pop("act").float()
            if act.dim() == 2:
                act = act[:, :, None, None]
            chosen = act[torch.arange(n, device=device), index]  # [n, H, W]
            value = chosen[:, chosen.shape[1] // 2, chosen.shape[2] // 2] if neuron else chosen.mean(dim=(1, 2))
            loss = sign * value.sum()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step + 1, steps)
        with torch.no_grad():
            out = image_f().detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [(img * 255 + 0.5).astype(np.uint8) for img in out]


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
