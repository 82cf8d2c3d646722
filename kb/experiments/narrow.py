"""Only what the target units need: while a check's conditions run, the modules between the source and the target
layer that cannot reach the measured units are skipped, and the convolution that makes them computes only their
channels. Exact for the measured channels (every other channel of the target layer is left at zero), read from
the zoo's declared structure (``Architecture.trunk``), never guessed:

- an Inception-style block (``Branches``: parallel branches concatenated along channels) whose output is the target
  layer: the branches that make none of the units are skipped (each of their modules returns zeros of its shape),
  and the last convolution of each branch that does make some computes only those channels;
- a convolution whose output reaches the target layer's module through channel-wise steps only (``Same``: ReLU,
  the identity; a folded BatchNorm): it computes only the units' channels.

Anything else (a ResNet block, a block the trunk names by its type) runs whole. Patches are instance attributes
(``forward``) removed in ``finally``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from kb.graph.zoo.spec import Architecture, Branches, Conv, M, Same, Step

Plan = tuple[list[nn.Module], dict[nn.Conv2d, list[int]]]  # (modules to skip, {conv: output channels to compute})


def _conv_path(step: Step) -> str | None:
    return step.path if isinstance(step, (Conv, M)) else None


def _last_conv(model: nn.Module, steps: Sequence[Step]) -> nn.Conv2d | None:
    for step in reversed(steps):
        path = _conv_path(step)
        if path is None:
            continue
        module = model.get_submodule(path)
        return module if _sliceable(module) else None
    return None


def _sliceable(module: nn.Module) -> TypeGuard[nn.Conv2d]:
    return isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"


def plan(model: nn.Module, arch: Architecture, target_layer: str, units: list[int]) -> Plan:
    """(modules to skip, {convolution: the output channels to compute}) for the target layer's ``units``."""
    module_path = arch.layer(target_layer).module
    trunk = list(arch.trunk)
    for step in trunk:
        if isinstance(step, Branches) and step.path == module_path:
            return _branches(model, step, units)
    # a convolution that reaches the layer's module through channel-wise steps only
    for i, step in enumerate(trunk):
        if isinstance(step, (Same, M)) and step.path == module_path:
            j = i - 1 if isinstance(step, Same) or not isinstance(model.get_submodule(step.path), nn.Conv2d) else i
            while j >= 0 and isinstance(trunk[j], Same):
                j -= 1
            conv_path = _conv_path(trunk[j]) if j >= 0 else None
            if conv_path is None:
                break
            conv = model.get_submodule(conv_path)
            between = [model.get_submodule(s.path) for s in trunk[j + 1 : i + 1] if isinstance(s, M)]
            channelwise = all(isinstance(m, (nn.ReLU, nn.Identity)) or type(m).__name__ == "ReLU" for m in between)
            if _sliceable(conv) and channelwise:
                return [], {conv: sorted(set(units))}
            break
    return [], {}


def _branches(model: nn.Module, block: Branches, units: list[int]) -> Plan:
    skip: list[nn.Module] = []
    slices: dict[nn.Conv2d, list[int]] = {}
    offset = 0
    for steps in block.branches:
        last = _last_conv(model, steps)
        if last is None:
            return [], {}  # a branch this reading does not size: run the block whole
        width = last.out_channels
        mine = [u - offset for u in units if offset <= u < offset + width]
        if mine:
            slices[last] = sorted(set(mine))
        else:
            skip += [model.get_submodule(p) for p in (_conv_path(s) for s in steps) if p is not None]
        offset += width
    return skip, slices


@contextlib.contextmanager
def narrowed(
    model: nn.Module,
    arch: Architecture,
    target_layer: str,
    units: list[int],
    probe: Callable[[nn.Module], object],
) -> Iterator[None]:
    """Within the block, the model computes only what the target layer's ``units`` need. ``probe(model)``: one
    pass (any batch) over the part of the model that runs, to learn the skipped modules' output shapes."""
    skip, slices = plan(model, arch, target_layer, units)
    if not skip and not slices:
        yield
        return
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        shapes.setdefault(module, tuple(output.shape[1:]))

    handles = [m.register_forward_hook(record) for m in skip]
    try:
        probe(model)
    finally:
        for h in handles:
            h.remove()
    patched: list[
        tuple[nn.Module, Callable[..., Any] | None]
    ] = []  # (module, the instance forward it had before, or None)
    try:
        for m in skip:
            if m in shapes:
                shape = shapes[m]
                patched.append((m, vars(m).get("forward")))
                m.forward = lambda x, *a, shape=shape, **k: x.new_zeros((x.shape[0], *shape))
        for conv, channels in slices.items():
            index = torch.tensor(channels, dtype=torch.long, device=conv.weight.device)
            weight = conv.weight.index_select(0, index).contiguous(memory_format=torch.channels_last)
            bias = conv.bias.index_select(0, index) if conv.bias is not None else None

            def forward(
                x: torch.Tensor,
                conv: nn.Conv2d = conv,
                weight: torch.Tensor = weight,
                bias: torch.Tensor | None = bias,
                index: torch.Tensor = index,
            ) -> torch.Tensor:
                part = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
                out = part.new_zeros((part.shape[0], conv.out_channels, *part.shape[2:]))
                out[:, index] = part
                return out

            module: nn.Module = conv  # an instance forward (nn.Module's attribute), over Conv2d's method
            patched.append((module, vars(module).get("forward")))
            module.forward = forward
        yield
    finally:
        for m, before in reversed(patched):
            if before is None:
                del m.forward
            else:
                m.forward = before
