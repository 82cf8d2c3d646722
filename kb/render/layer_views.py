"""Pictures of a whole layer, as OpenAI Microscope shows them: DEEPDREAM and CARICATURE.

- DEEPDREAM: one image that maximises the whole layer (lucent-style ``deepdream(layer)``: the mean squared
  activation of every channel and position), from seeded noise.
- CARICATURE: an image whose activations at the layer point the way a target image's do (Lucid's caricature
  recipe: ``dot_compare``, the dot product with the target's activations weighted by their cosine). As in
  Lucid's recipe the target is image 0 of every batch, through the same transformations as the image made.

The optimisation is the workers' feature-visualisation recipe (``feature_vis``: FFT parameterisation,
decorrelated colour, standard transforms, Adam, upsampling, the pass stopped at the layer); the objectives are
lucent objectives (``lucent_adapter``). One image per job, float32.
"""

from __future__ import annotations

import numpy as np
import torch

from kb.render import lucent_adapter
from kb.render.feature_vis import ImageFn, Progress, _fft_image, _pixel_image, _to_rgb, seed_everything
from kb.render.hooks import forward_hooks, run_until_stop, stop_at
from kb.render.jobs import InvalidKind
from kb.render.preprocess import preprocess_fn

LAYER_SEED = 7_919  # a layer view's noise: its own stream, not any unit's (feature_vis seeds by unit)
OBJECTIVE_NAME = "layer"  # the name the objectives ask ``T`` for: the one layer captured


def start_image(
    size: int, seed: int, parameterization: str = "fft", device: torch.device | str = "cpu"
) -> tuple[list[torch.Tensor], ImageFn]:
    """(parameters, image function): the seeded noise a layer view starts from, RGB in [0, 1]."""
    make = _fft_image if parameterization == "fft" else _pixel_image
    params, raw = make(1, size, [seed * 1_000_003 + LAYER_SEED], torch.device(device))
    return params, _to_rgb(raw, True, torch.device(device))


def as_input(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 → a [1, 3, H, W] float image in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255


def render_layer_view(
    model: torch.nn.Module,
    module_path: str,
    kind: str,
    *,
    target: np.ndarray | None = None,
    size: int = 128,
    steps: int = 512,
    seed: int = 0,
    parameterization: str = "fft",
    transforms: str = "standard",
    lr: float = 0.05,
    upsample: int = 224,
    preprocess: str = "imagenet",
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> np.ndarray:
    """The layer view of ``kind`` (DEEPDREAM, or CARICATURE of ``target``, HxWx3 uint8 of ``size`` px), as
    HxWx3 uint8."""
    from kb.render import transforms as T

    where = torch.device(device)
    if kind == "DEEPDREAM":
        objective = lucent_adapter.deepdream(OBJECTIVE_NAME)
        fixed = None
    elif kind == "CARICATURE":
        if target is None or target.shape != (size, size, 3):
            raise InvalidKind(f"a caricature needs its target image at {size}x{size} px")
        objective = lucent_adapter.dot_compare(OBJECTIVE_NAME, batch=1)
        fixed = as_input(target, where)
    else:
        raise InvalidKind(f"{kind} is not a layer view")
    layer = dict(model.named_modules())[module_path]
    dtype = next(model.parameters()).dtype
    seed_everything(seed)
    params, image_f = start_image(size, seed, parameterization, where)
    chain = [T.standard] if transforms == "standard" else []
    pre = preprocess_fn(preprocess)
    up = torch.nn.Upsample(size=upsample, mode="bilinear", align_corners=True) if upsample else None
    optimizer = torch.optim.Adam(params, lr=lr)
    captured: dict[str, torch.Tensor] = {}
    with forward_hooks([stop_at(layer, lambda output: captured.update(act=output))]):
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            x = image_f()
            if fixed is not None:  # Lucid's recipe: the target is image 0, transformed with the image made
                x = torch.cat([fixed, x])
            for t in chain:
                x = t(x)
            if up is not None and x.shape[-1] != upsample:
                x = up(x)
            run_until_stop(model, pre(x).to(dtype))
            act = captured.pop("act")
            if act.dim() == 2:
                act = act[:, :, None, None]
            loss = objective(lambda _name, act=act: act)
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(step + 1, steps)
        with torch.no_grad():
            out = image_f().detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()[0]
    pixels: np.ndarray = (out * 255 + 0.5).astype(np.uint8)
    return pixels


def layer_activations(
    model: torch.nn.Module,
    module_path: str,
    images: list[np.ndarray],
    *,
    upsample: int = 224,
    preprocess: str = "imagenet",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The layer's activations [N, C, H, W] for HxWx3 uint8 images (no transforms): what the objectives see."""
    layer = dict(model.named_modules())[module_path]
    x = torch.cat([as_input(i, device) for i in images])
    if upsample and x.shape[-1] != upsample:
        x = torch.nn.functional.interpolate(x, size=upsample, mode="bilinear", align_corners=True)
    captured: dict[str, torch.Tensor] = {}
    with forward_hooks([stop_at(layer, lambda output: captured.update(act=output))]), torch.no_grad():
        run_until_stop(model, preprocess_fn(preprocess)(x).to(next(model.parameters()).dtype))
    act = captured["act"].float()
    return act[:, :, None, None] if act.dim() == 2 else act
