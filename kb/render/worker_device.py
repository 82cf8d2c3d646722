"""Where a worker renders: its device (KB_RENDER_DEVICE, else CUDA when there is one) and whether in bf16."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kb.settings import Settings

if TYPE_CHECKING:
    import torch


def device(settings: Settings) -> torch.device:
    import torch

    if settings.render_device:
        return torch.device(settings.render_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX: oneDNN's bf16 convolutions run there at about
    twice the float32 speed; elsewhere they are emulated and gain nothing)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except RuntimeError:  # pragma: no cover - an unusual build of torch
        return False


def bf16(settings: Settings) -> bool:
    """bf16 unless KB_RENDER_BF16=0: on a GPU, and on a CPU that computes bf16 natively (``cpu_has_bf16``);
    never on other CPUs."""
    if settings.render_bf16 is False:
        return False
    where = device(settings)
    return where.type == "cuda" or (where.type == "cpu" and cpu_has_bf16())
