"""How many units of one layer a worker renders in one optimisation: from settings, else from its device.

- CPU: 8. Time per unit-step was within this machine's noise from 4 to 16 units (32-39 ms, googlenet
  inception4a at 224 px, render_units timed directly), and at 8 images the largest
  activation of a 224-px pass (GoogLeNet's stem, 8x64x112x112 floats) stays under glibc's 32 MiB mmap
  threshold, so the allocator keeps it between steps (``kb.render.allocator``).
- CUDA: as many as fit in 70% of the free memory, at ``BYTES_PER_ACTIVATION`` times the size of the
  activations one image produces on the way to the target layer (counted by a forward pass with hooks).
"""

from __future__ import annotations

import logging

import torch

from kb.render.hooks import forward_hooks, run_until_stop, stop_at

log = logging.getLogger("kb.render")

CPU_BATCH = 8
GPU_MAX_BATCH = 1024
GPU_FALLBACK_BATCH = 64
GPU_MEMORY_FRACTION = 0.7
BYTES_PER_ACTIVATION = 3 * 4  # the activation, its gradient and a workspace, in float32


def activation_numel(model: torch.nn.Module, module_path: str, image_size: int, device: torch.device | str) -> int:
    """Elements output by every leaf module for one image of ``image_size`` px, up to ``module_path``."""
    where = torch.device(device)
    dtype = next(model.parameters()).dtype
    total = [0]

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    leaves = [(m, count) for m in model.modules() if not list(m.children())]
    with (
        forward_hooks([*leaves, stop_at(dict(model.named_modules())[module_path])]),
        torch.no_grad(),
        torch.autocast(where.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
    ):
        run_until_stop(model, torch.zeros(1, 3, image_size, image_size, device=where, dtype=dtype))
    return total[0]


def units_per_pass(
    model: torch.nn.Module, module_path: str, image_size: int, device: torch.device | str, configured: int = 0
) -> int:
    where = torch.device(device)
    if configured > 0:
        return configured
    if where.type != "cuda":
        return CPU_BATCH
    try:
        free, _ = torch.cuda.mem_get_info(where)
        per_unit = BYTES_PER_ACTIVATION * activation_numel(model, module_path, image_size, where)
    except (RuntimeError, NotImplementedError):  # counting must never cost a render
        log.warning(
            "could not size the batch for %s on %s; using %d", module_path, where, GPU_FALLBACK_BATCH, exc_info=True
        )
        return GPU_FALLBACK_BATCH
    return max(1, min(GPU_MAX_BATCH, int(free * GPU_MEMORY_FRACTION // per_unit)))
