"""The models a worker renders with: loaded once per process (by weights hash), checked against the hash they
were imported with, and prepared for rendering (``prepare``)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from kb.graph.zoo.spec import Architecture


class WrongWeights(Exception):
    """This worker's copy of the weights is not the one the model was imported with. Not permanent: the job is
    retried up to its cap, and another worker, with the right file, may take it."""


@lru_cache(maxsize=4)
def cached_model(
    source: str, described: str, sha256: str, device_name: str, bf16: bool = False
) -> tuple[Architecture, torch.nn.Module]:
    """(architecture, prepared model) for the model imported from ``source`` with weights ``described``."""
    from kb.graph import zoo
    from kb.graph.weights import reload, state_dict_sha256
    from kb.render.allocator import keep_freed_memory

    keep_freed_memory()
    arch = zoo.get(source)
    model = reload(arch, described)
    got = state_dict_sha256(model.state_dict())
    if got != sha256:
        raise WrongWeights(
            f"this worker's weights for {source} ({described}) hash to {got[:12]}, "
            f"the model was imported with {sha256[:12]}"
        )
    return arch, prepare(model, device_name, bf16=bf16)


def prepare(
    model: torch.nn.Module,
    device: torch.device | str,
    channels_last: bool = True,
    rewrites: bool = True,
    bf16: bool = False,
) -> torch.nn.Module:
    """Eval mode, no weight gradients, on ``device``, channels-last, lucent's redirected ReLUs without GPU
    synchronisation, BatchNorm folded into the convolutions, and on the CPU the image convolution's gradient
    computed in polyphase form (``model_rewrites``): once per worker process.

    ``bf16``: the weights are cast once, here. Under autocast alone they would be cast at every step, since
    autocast caches only casts of weights that require gradients (frozen weights do not); the image and its
    optimiser stay float32."""
    import torch

    from kb.render.lucent_adapter import redirected_relus_without_sync
    from kb.render.model_rewrites import fold_batchnorm, polyphase_input_convs

    where = torch.device(device)
    model = model.eval().cpu()
    if rewrites:
        model = fold_batchnorm(model)
        if where.type == "cpu":
            polyphase_input_convs(model)
    model = model.to(where)
    for p in model.parameters():
        p.requires_grad_(False)
    redirected_relus_without_sync(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if bf16:
        model = model.to(torch.bfloat16)
    return model
