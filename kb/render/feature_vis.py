"""The workers' feature-visualisation renderer: lucent's recipe, batched and seeded.

``render_units`` is lucent's recipe (FFT parameterisation, decorrelated colour, standard transforms, Adam,
channel or neuron objective, upsampling to 224 px) run differently: many units of one layer in one batched
optimisation (one image per unit, each with its own objective), the forward pass stopped at the target layer,
no weight gradients, channels-last memory, a model rewritten for cheaper input gradients (``model_cache.prepare``,
``model_rewrites``) and the transforms without kornia (``transforms``). Every image is seeded: it depends on the
seed and its unit, not on the batch it was rendered in. It calls no lucent code (``lucent_adapter`` does).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import numpy as np
import torch

from kb.render.hooks import forward_hooks, run_until_stop, stop_at
from kb.render.preprocess import preprocess_fn

COLOR_CORRELATION = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION /= np.max(np.linalg.norm(COLOR_CORRELATION, axis=0))

ImageFn = Callable[[], torch.Tensor]  # the current images of an optimisation, [N, 3, H, W]
Progress = Callable[[int, int], None]  # (steps done, steps)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fft_image(
    batch: int, size: int, seeds: list[int], device: torch.device, sd: float = 0.01
) -> tuple[list[torch.Tensor], ImageFn]:
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

    def image() -> torch.Tensor:
        spectrum = torch.view_as_complex((scale * init).contiguous())
        out: torch.Tensor = torch.fft.irfftn(spectrum, s=(h, w), norm="ortho")[:batch, :3, :h, :w] / 4.0
        return out

    return [init], image


def _pixel_image(
    batch: int, size: int, seeds: list[int], device: torch.device, sd: float = 0.01
) -> tuple[list[torch.Tensor], ImageFn]:
    init = (
        torch.stack([torch.randn((3, size, size), generator=torch.Generator().manual_seed(s)) * sd for s in seeds])
        .to(device)
        .requires_grad_(True)
    )
    return [init], lambda: init


def _to_rgb(image_f: ImageFn, decorrelate: bool, device: torch.device) -> ImageFn:
    matrix = torch.tensor(COLOR_CORRELATION.T, device=device)

    def inner() -> torch.Tensor:
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
    progress: Progress | None = None,
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
        report = None if progress is None else functools.partial(_chunk_progress, progress, c, len(chunks))
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


def _chunk_progress(progress: Progress, chunk: int, chunks: int, step: int, total: int) -> None:
    """Chunk ``chunk``'s progress (``step`` of its ``total``) as progress through all ``chunks`` of them."""
    progress(chunk * total + step, chunks * total)


def _optimise(
    model: torch.nn.Module,
    target: torch.nn.Module,
    units: list[int],
    *,
    size: int,
    steps: int,
    seed: int,
    parameterization: str,
    transforms: str,
    lr: float,
    negative: bool,
    neuron: bool,
    upsample: int,
    preprocess: str,
    device: torch.device,
    channels_last: bool,
    autocast: bool,
    progress: Progress | None,
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
    captured: dict[str, torch.Tensor] = {}

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
            loss: torch.Tensor = sign * value.sum()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step + 1, steps)
        with torch.no_grad():
            out = image_f().detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [(img * 255 + 0.5).astype(np.uint8) for img in out]
