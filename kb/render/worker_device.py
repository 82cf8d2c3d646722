"""Where a worker renders: its device (KB_RENDER_DEVICE, else CUDA when there is one) and whether in bf16."""

from __future__ import annotations

from kb.settings import Settings


def device(settings: Settings):
    import torch

    if settings.render_device:
        return torch.device(settings.render_device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16(settings: Settings) -> bool:
    """bf16 on a GPU unless KB_RENDER_BF16=0. Never on a CPU: CPUs without bf16 units gain nothing, and some
    CPU kernels have no bf16 version (the avg_pool3d inside InceptionV1's local response norm)."""
    return device(settings).type == "cuda" and settings.render_bf16 is not False
