"""Walk an architecture's trunk and turn the modules between significant layers into link programs.

Each module becomes linear maps (``kb.graph.linear``): convs and linear layers with their weights,
BatchNorm as a per-channel scale folded into the conv before it, pooling windows as their average, ReLU,
dropout and local response normalisation as the identity. A block (Inception, ResNet) becomes several terms.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from kb.graph import linear as L
from kb.graph.program import LinkProgram, Term
from kb.graph.zoo.spec import Architecture, Branches, Conv, M, Pool, Same, Step


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


Shape = tuple[int, ...]  # a feature map's shape without the batch dimension
_Size = int | tuple[int, ...]  # a kernel size, stride or padding as torch modules hold it


def _pair(v: _Size) -> L.Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _np(t: torch.Tensor) -> npt.NDArray[np.float32]:
    """The tensor's values as numpy, sharing its memory when it is already float32 on the CPU: the importer drops
    the model once the programs are built, so VGG16's 0.5 GB of weights are held once, not twice."""
    return t.detach().to("cpu", torch.float32).numpy()


def _adaptive_size(size: int | tuple[int | None, int | None] | None, h: int, w: int) -> L.Pair:
    """An adaptive pool's output size over an h x w map (None for a side keeps the input's)."""
    if isinstance(size, int):
        return size, size
    if size is None:
        return h, w
    return (h if size[0] is None else size[0]), (w if size[1] is None else size[1])


def conv_dense(
    w: npt.NDArray[np.float32], stride: _Size, padding: str | _Size, dilation: _Size, groups: int, path: str
) -> L.Dense:
    """A conv as a dense kernel [out, in, kh, kw]. A dilated kernel is the same map with zeros between its
    taps, ``(k - 1) * d + 1`` wide; a grouped conv is block-diagonal over (out, in): both are exact."""
    dh, dw = _pair(dilation)
    if (dh, dw) != (1, 1):
        out, cin, kh, kw = w.shape
        spread = np.zeros((out, cin, (kh - 1) * dh + 1, (kw - 1) * dw + 1), dtype=w.dtype)
        spread[:, :, ::dh, ::dw] = w
        w = spread
    if groups != 1:
        g, (out, cin) = groups, w.shape[:2]
        full = np.zeros((out, cin * g, *w.shape[2:]), dtype=w.dtype)
        for i in range(g):
            rows = slice(i * (out // g), (i + 1) * (out // g))
            full[rows, i * cin : (i + 1) * cin] = w[rows]
        w = full
    if isinstance(padding, str):  # "same" (stride 1): half the dilated window before
        padding = (0, 0) if padding == "valid" else ((w.shape[2] - 1) // 2, (w.shape[3] - 1) // 2)
    return L.Dense(w, _pair(stride), _pair(padding), True, path)


def shapes(model: nn.Module, arch: Architecture) -> dict[str, Shape]:
    """Output shape of every module on a forward pass with a zero image (checks the declared paths exist)."""
    out: dict[str, Shape] = {}
    handles = []
    modules: dict[str, nn.Module] = dict(model.named_modules())
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


@dataclass(frozen=True)
class _Chain:
    """A step that is a chain of maps (possibly none: an identity)."""

    ops: list[L.Op]
    shape: Shape  # its output shape


@dataclass(frozen=True)
class _Block:
    """A step that is a block: terms over slices of its ``channels`` output channels."""

    terms: list[Term]
    channels: int
    shape: Shape


_M = TypeVar("_M", bound=nn.Module)


class _Walker:
    def __init__(self, model: nn.Module, arch: Architecture, module_shapes: dict[str, Shape]):
        self.model = model
        self.arch = arch
        self.modules: dict[str, nn.Module] = dict(model.named_modules())
        self.shapes = module_shapes
        self.notes: list[str] = []

    # -- single modules ----------------------------------------------------------------------------------
    def module(self, path: str) -> nn.Module:
        try:
            return self.modules[path]
        except KeyError:
            raise ExtractionError(f"{self.arch.source}: no module {path!r}") from None

    def typed_module(self, path: str, kind: type[_M]) -> _M:
        mod = self.module(path)
        if not isinstance(mod, kind):
            raise ExtractionError(f"{self.arch.source}: {path} is a {type(mod).__name__}, not a {kind.__name__}")
        return mod

    def conv(self, mod: nn.Conv2d, path: str, pad: L.Pair | None = None) -> L.Dense:
        padding: str | _Size = pad if pad is not None else mod.padding
        return conv_dense(_np(mod.weight), mod.stride, padding, mod.dilation, mod.groups, path)

    def batchnorm(self, mod: nn.BatchNorm2d, path: str) -> L.Dense:
        if mod.running_var is None:
            raise ExtractionError(f"{self.arch.source}: {path} keeps no running statistics to fold")
        scale = (
            mod.weight.detach() / torch.sqrt(mod.running_var + mod.eps)
            if mod.affine
            else 1.0 / torch.sqrt(mod.running_var + mod.eps)
        )
        c = scale.shape[0]
        w = np.zeros((c, c, 1, 1), dtype=np.float32)
        w[np.arange(c), np.arange(c), 0, 0] = _np(scale)
        return L.Dense(w, parametric=False, source=path)

    def pool(self, size: _Size, stride: _Size | None, pad: _Size, path: str, op: str) -> L.Spatial:
        window, step, padding = _pair(size), _pair(stride if stride is not None else size), _pair(pad)
        if op == "max":
            self.notes.append(
                f"{path or 'max-pool'}: max-pool {window[0]}x{window[1]}/{step[0]} linearised as its average"
            )
        return L.box(window, step, padding, path)

    def linear(self, mod: nn.Linear, path: str, in_shape: Shape | None) -> L.Dense:
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
    def step(self, step: Step, shape: Shape) -> _Chain | _Block:
        """A chain of ops, or a block's terms, with the step's output shape."""
        if isinstance(step, Conv):
            mod = self.typed_module(step.path, nn.Conv2d)
            return _Chain([self.conv(mod, step.path, step.pad)], self.shapes.get(step.path, shape))
        if isinstance(step, Pool):
            return _Chain(
                [self.pool(step.size, step.stride, step.pad, step.path, step.op)], self.shapes.get(step.path, shape)
            )
        if isinstance(step, Same):
            if step.note:
                self.notes.append(f"{step.path}: {step.note}")
            return _Chain([], self.shapes.get(step.path, shape))
        if isinstance(step, Branches):
            return self.branches(step.path, step.branches, shape)
        if isinstance(step, M):
            return self.typed(step.path, shape)
        raise ExtractionError(f"unknown trunk step {step!r}")

    def chain(self, steps: Iterable[Step], shape: Shape) -> tuple[list[L.Op], Shape]:
        ops: list[L.Op] = []
        for s in _flatten(self.model, steps):
            done = self.step(s, shape)
            if not isinstance(done, _Chain):
                raise ExtractionError(f"nested blocks inside a branch are not supported ({s})")
            ops += done.ops
            shape = done.shape
        return ops, shape

    def branches(self, path: str, branches: Sequence[Sequence[Step]], shape: Shape) -> _Block:
        terms, start = [], 0
        in_channels = shape[0]
        for i, steps in enumerate(branches):
            ops, _ = self.chain(steps, shape)
            dense = [o for o in ops if isinstance(o, L.Dense)]
            channels = dense[-1].out_channels if dense else in_channels
            terms.append(Term(start, start + channels, tuple(ops), f"{path} branch {i + 1}"))
            start += channels
        return _Block(terms, start, self.shapes.get(path, (start, *shape[1:])))

    def typed(self, path: str, shape: Shape) -> _Chain | _Block:
        mod = self.module(path)
        name = type(mod).__name__
        out_shape = self.shapes.get(path, shape)
        if len(out_shape) == 1 and len(shape) == 3 and shape[0] * shape[1] * shape[2] == out_shape[0]:
            out_shape = shape  # torch.flatten between modules: keep the map's geometry for the next linear layer
        if isinstance(mod, nn.Sequential):
            raise AssertionError("sequentials are expanded before walking")
        if isinstance(mod, nn.Conv2d):
            return _Chain([self.conv(mod, path)], out_shape)
        if isinstance(mod, nn.BatchNorm2d):
            return _Chain([self.batchnorm(mod, path)], out_shape)
        if isinstance(mod, (nn.ReLU, nn.Dropout, nn.Identity, nn.Flatten)):
            return _Chain([], out_shape)
        if isinstance(mod, nn.LocalResponseNorm):
            self.notes.append(f"{path}: local response normalisation taken as the identity")
            return _Chain([], out_shape)
        if isinstance(mod, nn.MaxPool2d):
            return _Chain([self.pool(mod.kernel_size, mod.stride, mod.padding, path, "max")], out_shape)
        if isinstance(mod, nn.AvgPool2d):
            return _Chain([self.pool(mod.kernel_size, mod.stride, mod.padding, path, "avg")], out_shape)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            h, w = shape[1], shape[2]
            oh, ow = _adaptive_size(mod.output_size, h, w)
            if (h, w) == (oh, ow):
                return _Chain([], out_shape)
            if h % oh or w % ow:
                raise ExtractionError(f"{path}: adaptive pooling {h}x{w} -> {oh}x{ow} is not a fixed window")
            return _Chain([L.box((h // oh, w // ow), (h // oh, w // ow), (0, 0), path)], out_shape)
        if isinstance(mod, nn.Linear):
            return _Chain([self.linear(mod, path, shape)], out_shape)
        if name == "BasicConv2d":  # torchvision googlenet / inception_v3: conv, BatchNorm, ReLU
            conv = self.typed_module(f"{path}.conv", nn.Conv2d)
            bn = self.typed_module(f"{path}.bn", nn.BatchNorm2d)
            return _Chain([self.conv(conv, f"{path}.conv"), self.batchnorm(bn, f"{path}.bn")], out_shape)
        if name in self.arch.blocks:  # a block the architecture declares (Inception blocks)
            return self.branches(path, self.arch.blocks[name](path), shape)
        if name in ("Bottleneck", "BasicBlock"):
            return self.residual(path, mod, shape)
        raise ExtractionError(f"{self.arch.source}: no linear rule for module {path!r} ({name})")

    def residual(self, path: str, mod: nn.Module, shape: Shape) -> _Block:
        convs = ["conv1", "bn1", "conv2", "bn2"] + (["conv3", "bn3"] if hasattr(mod, "conv3") else [])
        main, _ = self.chain([M(f"{path}.{c}") for c in convs], shape)
        channels = [o for o in main if isinstance(o, L.Dense)][-1].out_channels
        downsample = f"{path}.downsample"  # a Sequential (_flatten expands it), or no module: the identity
        shortcut, _ = self.chain([M(downsample)], shape) if downsample in self.modules else ([], shape)
        terms = [
            Term(0, channels, tuple(main), f"{path} residual"),
            Term(0, channels, tuple(shortcut), f"{path} shortcut"),
        ]
        return _Block(terms, channels, self.shapes.get(path, shape))


def _flatten(model: nn.Module, steps: Iterable[Step]) -> Iterator[Step]:
    modules: dict[str, nn.Module] = dict(model.named_modules())
    for s in steps:
        if isinstance(s, M) and isinstance(modules.get(s.path), nn.Sequential):
            yield from _flatten(model, [M(f"{s.path}.{name}") for name, _ in modules[s.path].named_children()])
        else:
            yield s


def links(model: nn.Module, arch: Architecture) -> tuple[list[LayerShape], list[Link]]:
    """Significant layers with their measured shapes, and the link program between each consecutive pair.

    An architecture with no hand-written trunk is traced instead (``kb.graph.traced``)."""
    if not arch.trunk:
        from kb.graph import traced  # imports this module

        return traced.links(model, arch)
    module_shapes = shapes(model, arch)
    walker = _Walker(model, arch, module_shapes)
    by_module = {spec.module: spec for spec in arch.layers}
    layer_shapes = [LayerShape(s.name, module_shapes[s.module][0], module_shapes[s.module]) for s in arch.layers]
    result: list[Link] = []
    shape: Shape = arch.input_shape
    prefix: list[L.Op] = []
    terms: list[Term] | None = None
    channels = shape[0]
    start_channels = channels
    previous: str | None = None
    seen: set[str] = set()
    for step in _flatten(model, arch.trunk):
        done = walker.step(step, shape)
        shape = done.shape
        if isinstance(done, _Chain):
            if terms is not None:
                if any(isinstance(o, L.Dense) for o in done.ops):
                    raise ExtractionError(f"{arch.source}: channel-mixing op {step} after a block, before a layer")
                terms = [Term(t.start, t.stop, t.ops + tuple(done.ops), t.label) for t in terms]
            else:
                prefix += done.ops
                dense = [o for o in done.ops if isinstance(o, L.Dense)]
                if dense:
                    channels = dense[-1].out_channels
        else:
            if terms is not None:
                raise ExtractionError(f"{arch.source}: two blocks between significant layers at {step}")
            channels = done.channels
            terms = [Term(t.start, t.stop, tuple(prefix) + t.ops, t.label) for t in done.terms]
        path = step.path
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
