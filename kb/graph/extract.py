"""Walk an architecture's trunk and turn the modules between significant layers into link programs.

Each module becomes linear maps (``kb.graph.linear``): convs and linear layers with their weights,
BatchNorm as a per-channel scale folded into the conv before it, pooling windows as their average, ReLU,
dropout and local response normalisation as the identity. A block (Inception, ResNet) becomes several terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kb.graph import linear as L
from kb.graph.program import LinkProgram, Term
from kb.graph.zoo.spec import Architecture, Branches, Conv, M, Pool, Same


class ExtractionError(ValueError):
    pass


@dataclass(frozen=True)
class Link:
    source: str  # layer names
    target: str
    program: LinkProgram


@dataclass(frozen=True)
class LayerShape:
    name: str
    units: int
    shape: tuple[int, ...]  # output shape without the batch dimension


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _np(t: torch.Tensor) -> np.ndarray:
    """The tensor's values as numpy, sharing its memory when it is already float32 on the CPU: the importer drops
    the model once the programs are built, so VGG16's 0.5 GB of weights are held once, not twice."""
    return t.detach().to("cpu", torch.float32).numpy()


def shapes(model: nn.Module, arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Output shape of every module on a forward pass with a zero image (checks the declared paths exist)."""
    out: dict[str, tuple[int, ...]] = {}
    handles = []
    modules = dict(model.named_modules())
    for spec in arch.layers:
        if spec.module not in modules:
            raise ExtractionError(f"{arch.source}: declared layer {spec.name} has no module {spec.module!r}")
    for path, mod in modules.items():
        if path:
            handles.append(
                mod.register_forward_hook(
                    lambda m, i, o, p=path: (
                        out.__setitem__(p, tuple(o.shape[1:])) if isinstance(o, torch.Tensor) else None
                    )
                )
            )
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *arch.input_shape)))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return out


class _Walker:
    def __init__(self, model: nn.Module, arch: Architecture, module_shapes: dict[str, tuple[int, ...]]):
        self.model = model
        self.arch = arch
        self.modules = dict(model.named_modules())
        self.shapes = module_shapes
        self.notes: list[str] = []

    # -- single modules ----------------------------------------------------------------------------------
    def module(self, path: str) -> nn.Module:
        try:
            return self.modules[path]
        except KeyError:
            raise ExtractionError(f"{self.arch.source}: no module {path!r}") from None

    def conv(self, mod: nn.Conv2d, path: str, pad=None) -> L.Dense:
        """A conv as a dense kernel [out, in, kh, kw]. A dilated kernel is the same map with zeros between its
        taps, ``(k - 1) * d + 1`` wide; a grouped conv is block-diagonal over (out, in): both are exact."""
        w = _np(mod.weight)
        dh, dw = _pair(mod.dilation)
        if (dh, dw) != (1, 1):
            out, cin, kh, kw = w.shape
            spread = np.zeros((out, cin, (kh - 1) * dh + 1, (kw - 1) * dw + 1), dtype=w.dtype)
            spread[:, :, ::dh, ::dw] = w
            w = spread
        if mod.groups != 1:
            g, (out, cin) = mod.groups, w.shape[:2]
            full = np.zeros((out, cin * g, *w.shape[2:]), dtype=w.dtype)
            for i in range(g):
                rows = slice(i * (out // g), (i + 1) * (out // g))
                full[rows, i * cin : (i + 1) * cin] = w[rows]
            w = full
        padding = pad if pad is not None else mod.padding
        if isinstance(padding, str):  # "same" (stride 1): half the dilated window before
            padding = (0, 0) if padding == "valid" else ((w.shape[2] - 1) // 2, (w.shape[3] - 1) // 2)
        return L.Dense(w, _pair(mod.stride), _pair(padding), True, path)

    def batchnorm(self, mod: nn.BatchNorm2d, path: str) -> L.Dense:
        scale = (
            mod.weight.detach() / torch.sqrt(mod.running_var + mod.eps)
            if mod.affine
            else 1.0 / torch.sqrt(mod.running_var + mod.eps)
        )
        c = scale.shape[0]
        w = np.zeros((c, c, 1, 1), dtype=np.float32)
        w[np.arange(c), np.arange(c), 0, 0] = _np(scale)
        return L.Dense(w, parametric=False, source=path)

    def pool(self, size, stride, pad, path: str, op: str) -> L.Spatial:
        size, stride, pad = _pair(size), _pair(stride if stride is not None else size), _pair(pad)
        if op == "max":
            self.notes.append(
                f"{path or 'max-pool'}: max-pool {size[0]}x{size[1]}/{stride[0]} linearised as its average"
            )
        return L.box(size, stride, pad, path)

    def linear(self, mod: nn.Linear, path: str, in_shape: tuple[int, ...] | None) -> L.Dense:
        w = _np(mod.weight)
        if (
            in_shape is not None
            and len(in_shape) == 3
            and in_shape[0] * in_shape[1] * in_shape[2] == w.shape[1]
            and in_shape[1] * in_shape[2] > 1
        ):
            c, h, ww = in_shape
            return L.Dense(w.reshape(w.shape[0], c, h, ww), (1, 1), (0, 0), True, path)
        return L.Dense(w[:, :, None, None], (1, 1), (0, 0), True, path)

    # -- steps -------------------------------------------------------------------------------------------
    def step(self, step, shape):
        """Returns (kind, value, out_shape): kind "chain" with a list of ops, or "terms" with (terms, channels)."""
        if isinstance(step, Conv):
            mod = self.module(step.path)
            return "chain", [self.conv(mod, step.path, step.pad)], self.shapes.get(step.path, shape)
        if isinstance(step, Pool):
            return (
                "chain",
                [self.pool(step.size, step.stride, step.pad, step.path, step.op)],
                self.shapes.get(step.path, shape),
            )
        if isinstance(step, Same):
            if step.note:
                self.notes.append(f"{step.path}: {step.note}")
            return "chain", [], self.shapes.get(step.path, shape)
        if isinstance(step, Branches):
            return self.branches(step.path, step.branches, shape)
        if isinstance(step, M):
            return self.typed(step.path, shape)
        raise ExtractionError(f"unknown trunk step {step!r}")

    def chain(self, steps, shape) -> tuple[list[L.Op], tuple]:
        ops: list[L.Op] = []
        for s in _flatten(self.model, steps):
            kind, value, shape = self.step(s, shape)
            if kind != "chain":
                raise ExtractionError(f"nested blocks inside a branch are not supported ({s})")
            ops += value
        return ops, shape

    def branches(self, path: str, branches, shape):
        terms, start = [], 0
        in_channels = shape[0]
        for i, steps in enumerate(branches):
            ops, _ = self.chain(steps, shape)
            dense = [o for o in ops if isinstance(o, L.Dense)]
            channels = dense[-1].out_channels if dense else in_channels
            terms.append(Term(start, start + channels, tuple(ops), f"{path} branch {i + 1}"))
            start += channels
        return "terms", (terms, start), self.shapes.get(path, (start, *shape[1:]))

    def typed(self, path: str, shape):
        mod = self.module(path)
        name = type(mod).__name__
        out_shape = self.shapes.get(path, shape)
        if len(out_shape) == 1 and len(shape) == 3 and shape[0] * shape[1] * shape[2] == out_shape[0]:
            out_shape = shape  # torch.flatten between modules: keep the map's geometry for the next linear layer
        if isinstance(mod, nn.Sequential):
            raise AssertionError("sequentials are expanded before walking")
        if isinstance(mod, nn.Conv2d):
            return "chain", [self.conv(mod, path)], out_shape
        if isinstance(mod, nn.BatchNorm2d):
            return "chain", [self.batchnorm(mod, path)], out_shape
        if isinstance(mod, (nn.ReLU, nn.Dropout, nn.Identity, nn.Flatten)):
            return "chain", [], out_shape
        if isinstance(mod, nn.LocalResponseNorm):
            self.notes.append(f"{path}: local response normalisation taken as the identity")
            return "chain", [], out_shape
        if isinstance(mod, nn.MaxPool2d):
            return "chain", [self.pool(mod.kernel_size, mod.stride, mod.padding, path, "max")], out_shape
        if isinstance(mod, nn.AvgPool2d):
            return "chain", [self.pool(mod.kernel_size, mod.stride, mod.padding, path, "avg")], out_shape
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            h, w = shape[1], shape[2]
            oh, ow = _pair(mod.output_size)
            if (h, w) == (oh, ow):
                return "chain", [], out_shape
            if h % oh or w % ow:
                raise ExtractionError(f"{path}: adaptive pooling {h}x{w} -> {oh}x{ow} is not a fixed window")
            return "chain", [L.box((h // oh, w // ow), (h // oh, w // ow), (0, 0), path)], out_shape
        if isinstance(mod, nn.Linear):
            return "chain", [self.linear(mod, path, shape)], out_shape
        if name == "BasicConv2d":  # torchvision googlenet / inception_v3: conv, BatchNorm, ReLU
            return "chain", [self.conv(mod.conv, f"{path}.conv"), self.batchnorm(mod.bn, f"{path}.bn")], out_shape
        if name == "Inception":  # torchvision googlenet
            return self.branches(path, tuple((M(f"{path}.branch{i}"),) for i in range(1, 5)), shape)
        if name in _V3_BLOCKS:
            return self.branches(path, _V3_BLOCKS[name](path), shape)
        if name in ("Bottleneck", "BasicBlock"):
            return self.residual(path, mod, shape)
        raise ExtractionError(f"{self.arch.source}: no linear rule for module {path!r} ({name})")

    def residual(self, path: str, mod: nn.Module, shape):
        convs = ["conv1", "bn1", "conv2", "bn2"] + (["conv3", "bn3"] if hasattr(mod, "conv3") else [])
        main, _ = self.chain([M(f"{path}.{c}") for c in convs], shape)
        channels = [o for o in main if isinstance(o, L.Dense)][-1].out_channels
        if mod.downsample is not None:
            shortcut, _ = self.chain([M(f"{path}.downsample.{i}") for i in range(len(mod.downsample))], shape)
        else:
            shortcut = []
        terms = [
            Term(0, channels, tuple(main), f"{path} residual"),
            Term(0, channels, tuple(shortcut), f"{path} shortcut"),
        ]
        return "terms", (terms, channels), self.shapes.get(path, shape)


def _v3(*branches):
    return lambda p: tuple(tuple(s(p) for s in b) for b in branches)


def _m(name):
    return lambda p: M(f"{p}.{name}")


def _pool(size, stride, pad, op):
    return lambda p: Pool(size, stride, (pad, pad), f"{p} pool", op)


_V3_BLOCKS = {
    "InceptionA": _v3(
        [_m("branch1x1")],
        [_m("branch5x5_1"), _m("branch5x5_2")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3")],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
    "InceptionB": _v3(
        [_m("branch3x3")], [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3")], [_pool(3, 2, 0, "max")]
    ),
    "InceptionC": _v3(
        [_m("branch1x1")],
        [_m("branch7x7_1"), _m("branch7x7_2"), _m("branch7x7_3")],
        [_m(f"branch7x7dbl_{i}") for i in range(1, 6)],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
    "InceptionD": _v3(
        [_m("branch3x3_1"), _m("branch3x3_2")], [_m(f"branch7x7x3_{i}") for i in range(1, 5)], [_pool(3, 2, 0, "max")]
    ),
    "InceptionE": _v3(
        [_m("branch1x1")],
        [_m("branch3x3_1"), _m("branch3x3_2a")],
        [_m("branch3x3_1"), _m("branch3x3_2b")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3a")],
        [_m("branch3x3dbl_1"), _m("branch3x3dbl_2"), _m("branch3x3dbl_3b")],
        [_pool(3, 1, 1, "avg"), _m("branch_pool")],
    ),
}


def _flatten(model: nn.Module, steps):
    modules = dict(model.named_modules())
    for s in steps:
        if isinstance(s, M) and isinstance(modules.get(s.path), nn.Sequential):
            yield from _flatten(model, [M(f"{s.path}.{name}") for name, _ in modules[s.path].named_children()])
        else:
            yield s


def links(model: nn.Module, arch: Architecture) -> tuple[list[LayerShape], list[Link]]:
    """Significant layers with their measured shapes, and the link program between each consecutive pair."""
    module_shapes = shapes(model, arch)
    walker = _Walker(model, arch, module_shapes)
    by_module = {spec.module: spec for spec in arch.layers}
    layer_shapes = [LayerShape(s.name, module_shapes[s.module][0], module_shapes[s.module]) for s in arch.layers]
    result: list[Link] = []
    shape: tuple = arch.input_shape
    prefix: list[L.Op] = []
    terms: list[Term] | None = None
    channels = shape[0]
    start_channels = channels
    previous = None
    seen = set()
    for step in _flatten(model, arch.trunk):
        kind, value, shape = walker.step(step, shape)
        if kind == "chain":
            if terms is not None:
                if any(isinstance(o, L.Dense) for o in value):
                    raise ExtractionError(f"{arch.source}: channel-mixing op {step} after a block, before a layer")
                terms = [Term(t.start, t.stop, t.ops + tuple(value), t.label) for t in terms]
            else:
                prefix += value
                dense = [o for o in value if isinstance(o, L.Dense)]
                if dense:
                    channels = dense[-1].out_channels
        else:
            if terms is not None:
                raise ExtractionError(f"{arch.source}: two blocks between significant layers at {step}")
            block_terms, channels = value
            terms = [Term(t.start, t.stop, tuple(prefix) + t.ops, t.label) for t in block_terms]
        path = getattr(step, "path", "")
        if path in by_module:
            spec = by_module[path]
            seen.add(spec.name)
            if previous is not None:
                program_terms = terms if terms is not None else [Term(0, channels, tuple(prefix), path)]
                program = LinkProgram(start_channels, channels, tuple(program_terms), tuple(walker.notes))
                result.append(Link(previous, spec.name, program))
            previous, start_channels = spec.name, channels
            prefix, terms, walker.notes = [], None, []
    missing = [s.name for s in arch.layers if s.name not in seen]
    if missing:
        raise ExtractionError(f"{arch.source}: the trunk never reaches layers {missing}")
    return layer_shapes, result
