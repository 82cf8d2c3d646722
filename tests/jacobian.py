"""The independent check of expanded weights: autograd through the real modules, linearised.

ReLUs become the identity, max-pooling becomes average pooling over the same window, local response
normalisation the identity, BatchNorm runs in eval mode (affine); the other activation functions (ReLU6,
hardswish, SiLU, GELU...) are the identity too, and a squeeze-excitation block is replaced by its own Jacobian
at a zero input (autograd's jvp through the real block: ``x * gate(0)``). The Jacobian of one target unit at the
centre position with respect to the source layer's map is then exactly the expanded kernel, placed at
the window ``p*stride - pad`` — computed here with no knowledge of ``kb.graph.linear``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class _Stop(Exception):
    pass


_ACTIVATIONS = ("relu6", "hardtanh", "hardswish", "silu", "gelu", "leaky_relu", "elu", "mish")
_GATES = ("SqueezeExcitation", "SqueezeExcite", "SEModule", "EffectiveSEModule")


def _gate_at_zero(mod: torch.nn.Module, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """d mod(x) / dx at x = 0 applied to ones: for x * gate(x), the gate's value at zero (per channel)."""
    zeros = torch.zeros(1, channels, 2, 2, dtype=dtype)
    _, tangent = torch.func.jvp(mod, (zeros,), (torch.ones_like(zeros),))
    return tangent[:, :, :1, :1].detach()


@contextlib.contextmanager
def linearised(model: torch.nn.Module):
    gates = {}
    for mod in model.modules():
        if type(mod).__name__ in _GATES:
            conv = next(m for m in mod.modules() if isinstance(m, torch.nn.Conv2d))
            dtype = next(mod.parameters()).dtype
            gates[mod] = _gate_at_zero(mod, conv.in_channels, dtype)
    names = ("relu", "max_pool2d", "local_response_norm", "pad", *_ACTIVATIONS)
    originals = {name: getattr(F, name) for name in names}

    def relu(x, inplace=False):
        return x

    def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode)

    def pad(x, p, mode="constant", value=None):
        if value is not None and value == float("-inf"):
            value = 0.0
        return originals["pad"](x, p, mode=mode, value=value)

    hooks = []
    for mod in model.modules():
        if type(mod).__name__ in ("ReluLayer", "RedirectedReluLayer"):
            hooks.append(mod.register_forward_hook(lambda m, i, o: i[0]))
        if mod in gates:
            hooks.append(mod.register_forward_hook(lambda m, i, o: i[0] * gates[m]))
    F.relu, F.max_pool2d, F.local_response_norm, F.pad = relu, max_pool2d, (lambda x, *a, **k: x), pad
    for name in _ACTIVATIONS:
        setattr(F, name, lambda x, *a, **k: x)
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)
        for h in hooks:
            h.remove()


def jacobian(model, source_module: str, target_module: str, target: int, image_size: int, channels: int = 3):
    """d target[unit, centre] / d source map, as a [C, H, W] float64 tensor, and the centre (p, q)."""
    model = model.double().eval()
    modules = dict(model.named_modules())
    store = {}

    def at_source(m, i, o):
        leaf = o.detach().clone().requires_grad_(True)
        store["leaf"] = leaf
        return leaf

    def at_target(m, i, o):
        store["out"] = o
        raise _Stop

    with linearised(model):  # its hooks first, so that ours see the linearised outputs
        h1 = modules[source_module].register_forward_hook(at_source)
        h2 = modules[target_module].register_forward_hook(at_target)
        try:
            model(torch.randn(1, channels, image_size, image_size, dtype=torch.float64))
        except _Stop:
            pass
        finally:
            h1.remove()
            h2.remove()
    out, leaf = store["out"], store["leaf"]
    if out.dim() == 2:
        out = out[:, :, None, None]
    p, q = out.shape[2] // 2, out.shape[3] // 2
    (grad,) = torch.autograd.grad(out[0, target, p, q], leaf)
    grad = grad[0]
    if grad.dim() == 1:
        grad = grad[:, None, None]
    return grad, (p, q)
