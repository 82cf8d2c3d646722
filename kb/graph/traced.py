"""Link programs for any ``nn.Module``, by tracing: the generic path behind architectures with no trunk.

``links(model, arch)`` traces the model with ``torch.fx`` (``symbolic_trace``: fast, keeps ``torch.nn`` modules
as leaves with their parameters at hand, and records which module each op ran in, so a significant layer's
output is the last op inside its module path), runs it once on a zero image to learn every op's shape, then
walks the ops between each pair of consecutive significant layers, carrying each op's output as a linear
function of the source layer's map: terms of chains of ``kb.graph.linear`` maps over slices of its channels,
exactly the format of ``kb.graph.program`` (so storage, on-demand kernels and the importer are unchanged).

The rules (the README's "Weights" section says why each holds):
- convolutions (grouped, depthwise, dilated, strided, ``padding='same'``) and linear layers: their weights,
  biases dropped; ``F.pad`` (constant) shifts the window;
- BatchNorm: its scale gamma / sigma (running statistics), its shift dropped like a bias;
- activation functions (ReLU, ReLU6, leaky ReLU, ELU, GELU, SiLU, hardswish, Mish...): the identity;
- max-pooling: the average over the same window (noted on the link); average pooling its window; adaptive
  and global average pooling a fixed window (refused where the windows are not one size);
- residual adds and subtractions: terms add; concatenations: terms side by side; scalar products scale;
- channel shuffles, chunks, splits, views and flattens: the permutation or selection of channels they are;
- squeeze-excitation gates (``x * gate(x)`` with a [C, 1, 1] gate): the gate's value for a zero input to it,
  a per-channel scale (the Jacobian of ``x * gate(x)`` at x = 0);
- dropout, stochastic depth (torchvision's, as at evaluation), identity, local response normalisation (noted): the
  identity.
Anything else on the path (LayerNorm, GroupNorm, sigmoid or softmax outside a gate, attention, a product of
two maps...) is refused in one line naming the op and where it ran.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from kb.graph import linear as L
from kb.graph.extract import ExtractionError, LayerShape, Link, _adaptive_size, _np, _pair, conv_dense
from kb.graph.program import LinkProgram, Term
from kb.graph.zoo.spec import Architecture


class Unsupported(ExtractionError):
    pass


# -- what a value on the path is -------------------------------------------------------------------------


@dataclass(frozen=True)
class Lin:
    """An op's output as a linear function of the source map: terms over slices of ``channels``.

    ``hw`` is the spatial size; ``flat`` when the tensor is [N, C*H*W] (flattened, or a linear layer's output,
    then hw = (1, 1)). ``index`` is set while the tensor is in some other shape (between the views of a channel
    shuffle): it holds, at each element, the flat (c, y, x) position it came from."""

    channels: int
    hw: tuple[int, int]
    terms: tuple[Term, ...]
    flat: bool = False
    index: torch.Tensor | None = None


class _Tuple(tuple[Any, ...]):  # the outputs of chunk / split: a tuple of values on the path
    pass


@dataclass(frozen=True)
class _Refused:
    """An op with no rule: an error only if its output is used as a linear value (a gate's sigmoid is not)."""

    error: Unsupported


def _dep(v: Any) -> bool:
    """Does this value depend on the source?"""
    return isinstance(v, (Lin, _Tuple, _Refused))


_ACTIVATIONS_M: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
    nn.PReLU,
    nn.Softplus,
)
_IDENTITY_M: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout2d, nn.Identity, nn.AlphaDropout)
_ACTIVATIONS_F: set[Any] = {
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.celu,
    F.gelu,
    F.silu,
    F.hardswish,
    F.mish,
    F.softplus,
    torch.relu,
    torch.relu_,
}
_IDENTITY_F: set[Any] = {F.dropout, F.dropout2d, torch.dropout}
try:  # torchvision's stochastic depth (EfficientNet, ConvNeXt...): at evaluation, a dropout, the identity
    from torchvision.ops import stochastic_depth as _stochastic_depth

    _IDENTITY_F.add(_stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is installed with torch here
    pass
_ACTIVATIONS_METHOD = {"relu", "relu_"}
_IDENTITY_METHOD = {"contiguous", "clone", "float", "detach"}
_SHAPE_METHOD = {"view", "reshape", "transpose", "permute", "flatten", "squeeze", "unsqueeze", "chunk", "split"}
_SHAPE_F: set[Any] = {
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    torch.chunk,
    torch.split,
    operator.getitem,
}
# the modules with a rule in _Linearizer.module after the activations, identities and LocalResponseNorm
_RULED_M = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.BatchNorm1d,
    nn.Linear,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
)
_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        cls = type(modules[str(node.target)])
        name = (
            f"torch.nn.{cls.__name__}"
            if getattr(nn, cls.__name__, None) is cls
            else f"{cls.__module__}.{cls.__qualname__}"
        )
        return f"{name} at {node.target}"
    where = _where(node)
    if node.op == "call_method":
        return f"Tensor.{node.target} at {where}"
    target = node.target
    name = getattr(target, "__name__", str(target))
    home = str(getattr(target, "__module__", None) or "")
    if home.startswith("torch._C") or home == "":
        home = "torch"
    return f"{home}.{name} at {where}"


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [p for p in stack if isinstance(p, str)]
    return f"{paths[-1]} ({node.name})" if paths else node.name


# -- tracing -----------------------------------------------------------------------------------------------


def _trace(model: nn.Module, arch: Architecture) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises anything the forward raises on proxies
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ExtractionError(
            f"{arch.source}: torch.fx cannot trace the model ({type(exc).__name__}: {first}); "
            "expanded weights need a forward without control flow on tensor values"
        ) from None


@dataclass
class _Run:
    """What a forward pass on a zero image tells about each op: shapes, and the values the rules need."""

    shapes: dict[fx.Node, tuple[int, ...]]
    values: dict[fx.Node, Any]  # non-tensors, small tensors and static tensors (made from parameters only)
    static: set[fx.Node]


_SMALL = 1 << 16
_MAX_TERMS = 16


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.run_info = _Run({}, {}, set())

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        info = self.run_info
        inputs = n.all_input_nodes
        if n.op == "get_attr" or (n.op != "placeholder" and all(i in info.static for i in inputs)):
            info.static.add(n)
        if isinstance(out, torch.Tensor):
            info.shapes[n] = tuple(out.shape)
            if n in info.static or out.numel() <= _SMALL:
                info.values[n] = out
        elif isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
            info.values[n] = tuple(out) if all(o.numel() <= _SMALL for o in out) else None
        else:
            info.values[n] = out
        return out


def _record(gm: fx.GraphModule, arch: Architecture) -> _Run:
    was = gm.training
    gm.eval()
    rec = _Recorder(gm)
    try:
        with torch.no_grad():
            rec.run(torch.zeros((1, *arch.input_shape)))
    finally:
        gm.train(was)
    return rec.run_info


def _outputs(gm: fx.GraphModule, arch: Architecture) -> dict[str, fx.Node]:
    """Each significant layer's output: the last op that ran inside its module path."""
    modules = dict(gm.named_modules())
    found: dict[str, fx.Node] = {}
    wanted = {s.module for s in arch.layers}
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        stack = [p for p in (node.meta.get("nn_module_stack") or {}) if isinstance(p, str)]
        if node.op == "call_module":
            stack.append(str(node.target))
        for path in stack:
            if path in wanted:
                found[path] = node
    for spec in arch.layers:
        if spec.module not in found:
            if spec.module not in modules:
                raise ExtractionError(f"{arch.source}: declared layer {spec.name} has no module {spec.module!r}")
            raise ExtractionError(f"{arch.source}: layer {spec.name} ({spec.module}) never runs in the traced forward")
        if calls.get(spec.module, 0) > 1:
            raise ExtractionError(
                f"{arch.source}: layer {spec.name}'s module {spec.module} runs {calls[spec.module]} times in the "
                "forward; choose a module that runs once"
            )
    return found


# -- the linear algebra on values ----------------------------------------------------------------------------


def _chain(val: Lin, op: Callable[[int, int], L.Op]) -> tuple[Term, ...]:
    """Each term followed by a channel-wise op (given the term's slice)."""
    return tuple(Term(t.start, t.stop, (*t.ops, op(t.start, t.stop)), t.label) for t in val.terms)


def _mix(val: Lin, dense: L.Dense) -> tuple[Term, ...]:
    """Every term into a channel-mixing map (its columns for the term's slice): all terms then write all of
    the map's outputs, and add."""
    sliced: dict[tuple[int, int], L.Dense] = {}
    terms = []
    for t in val.terms:
        key = (t.start, t.stop)
        if key not in sliced:
            sliced[key] = (
                dense
                if key == (0, val.channels)
                else L.Dense(
                    np.ascontiguousarray(dense.weight[:, t.start : t.stop]),
                    dense.stride,
                    dense.pad,
                    dense.parametric,
                    dense.source,
                )
            )
        terms.append(Term(0, dense.out_channels, (*t.ops, sliced[key]), t.label))
    return tuple(terms)


def _diag(scale: np.ndarray, source: str) -> Callable[[int, int], L.Dense]:
    """A per-channel scale (BatchNorm, a gate) as the 1x1 diagonal of a term's slice."""
    s = scale.astype(np.float32)

    def op(start: int, stop: int) -> L.Dense:
        n = stop - start
        w = np.zeros((n, n, 1, 1), dtype=np.float32)
        w[np.arange(n), np.arange(n), 0, 0] = s[start:stop]
        return L.Dense(w, parametric=False, source=source)

    return op


def _refine(terms: Sequence[Term], channels: int) -> tuple[Term, ...]:
    """Terms over slices that overlap without being equal are cut to common slices (a selection of rows)."""
    slices = {(t.start, t.stop) for t in terms}
    cuts = sorted({0, channels, *(s for sl in slices for s in sl)})
    if all(cuts.index(a) + 1 == cuts.index(b) for a, b in slices):
        return tuple(terms)
    out = []
    for t in terms:
        lo, hi = cuts.index(t.start), cuts.index(t.stop)
        if hi == lo + 1:
            out.append(t)
            continue
        width = t.stop - t.start
        for a, b in zip(cuts[lo:hi], cuts[lo + 1 : hi + 1], strict=True):
            pick = L.select_rows(np.arange(a - t.start, b - t.start), width)
            out.append(Term(a, b, (*t.ops, pick), t.label))
    return tuple(out)


def _as_index(val: Lin) -> torch.Tensor:
    if val.index is not None:
        return val.index
    h, w = val.hw
    idx = torch.arange(val.channels * h * w, dtype=torch.float64)
    return idx.view(1, val.channels * h * w) if val.flat else idx.view(1, val.channels, h, w)


def _from_index(val: Lin, idx: torch.Tensor) -> Lin:
    """A value after a shape op: the same, a permutation or selection of its channels, or (between views) an
    index to resolve later."""
    h, w = val.hw
    base = torch.arange(val.channels * h * w, dtype=torch.float64)
    if idx.dim() == 2 and idx.shape[0] == 1 and idx.numel() == base.numel() and torch.equal(idx[0], base):
        return Lin(val.channels, val.hw, val.terms, flat=True)
    if idx.dim() == 4 and idx.shape[0] == 1 and tuple(idx.shape[2:]) == (h, w):
        grid = (torch.arange(h * w, dtype=torch.float64)).view(1, 1, h, w)
        rel = idx - grid
        channel = rel[0, :, 0, 0] / (h * w)
        if torch.all(rel == (channel * h * w).view(1, -1, 1, 1)) and torch.all(channel == channel.round()):
            picked = channel.long().numpy()
            if len(picked) == val.channels and np.array_equal(picked, np.arange(val.channels)):
                return Lin(val.channels, val.hw, val.terms)
            sel = np.zeros((len(picked), val.channels, 1, 1), dtype=np.float32)
            sel[np.arange(len(picked)), picked, 0, 0] = 1.0
            canon = Lin(val.channels, val.hw, val.terms)
            return Lin(len(picked), val.hw, _mix(canon, L.Dense(sel, parametric=False, source="channel selection")))
    return Lin(val.channels, val.hw, val.terms, val.flat, idx)


# -- the walk between two layers -------------------------------------------------------------------------------


class _Linearizer:
    def __init__(self, gm: fx.GraphModule, run: _Run, source: str, target: str, src: fx.Node, dst: fx.Node):
        self.gm, self.run = gm, run
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self.pair = f"{source} → {target}"
        self.src, self.dst = src, dst
        self.vals: dict[fx.Node, Any] = {}
        self.notes: list[str] = []

    def refuse(self, node: fx.Node, why: str = "") -> Unsupported:
        extra = f" ({why})" if why else ""
        return Unsupported(f"unsupported op in the path {self.pair}: {_describe(node, self.modules)}{extra}")

    def program(self) -> LinkProgram:
        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        if order[self.dst] <= order[self.src]:
            raise ExtractionError(f"the layers {self.pair} are not in the order the forward runs them")
        needed = self._ancestors(self.dst)
        shape = self.run.shapes[self.src]
        channels, hw, flat = _geometry(shape)
        self.in_channels = channels
        self.vals[self.src] = Lin(channels, hw, (Term(0, channels, (), ""),), flat)
        for node in self.gm.graph.nodes:
            if order[node] <= order[self.src] or node not in needed:
                continue
            if not any(_dep(self.vals.get(i)) for i in node.all_input_nodes):
                continue  # does not depend on the source: a constant, dropped like a bias
            try:
                self.vals[node] = self.step(node)
            except Unsupported as exc:
                self.vals[node] = _Refused(exc)
            if node is self.dst:
                break
        out = self.vals.get(self.dst)
        if isinstance(out, _Refused):
            raise out.error
        if not isinstance(out, Lin):
            raise ExtractionError(f"the path {self.pair} does not depend on {self.pair.split(' ')[0]}")
        if out.index is not None:
            raise self.refuse(self.dst, "a reshaped tensor is not a layer of channels")
        terms = _refine(out.terms, out.channels)
        return LinkProgram(channels, out.channels, terms, tuple(dict.fromkeys(self.notes)))

    def _ancestors(self, node: fx.Node) -> set[fx.Node]:
        seen: set[fx.Node] = set()
        todo = [node]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n is not self.src:
                todo.extend(n.all_input_nodes)
        return seen

    # -- helpers ---------------------------------------------------------------------------------------------
    def lin(self, node: fx.Node, arg: Any) -> Lin:
        v = self.vals.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(v, _Refused):
            raise v.error
        if not isinstance(v, Lin):
            raise self.refuse(node, "expects a map that depends on the source")
        if v.index is not None:
            raise self.refuse(node, "applied to a reshaped tensor")
        return v

    def same(self, node: fx.Node, arg: Any) -> Lin:
        """An elementwise op taken as the identity: the value as it is, reshaped or not."""
        v = self.vals.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(v, _Refused):
            raise v.error
        if not isinstance(v, Lin):
            raise self.refuse(node, "expects a map that depends on the source")
        return v if v.index is None else dataclasses.replace(v, index=v.index.contiguous())

    def concrete(self, node: fx.Node, arg: Any) -> Any:
        """An argument's value that does not depend on the source (a size, a parameter)."""
        if isinstance(arg, fx.Node):
            if _dep(self.vals.get(arg)):
                raise self.refuse(node, f"its argument {arg.name} depends on the source")
            if arg.op == "get_attr":
                return _attr(self.gm, str(arg.target))
            if arg not in self.run.values:
                raise self.refuse(node, f"no recorded value for {arg.name}")
            return self.run.values[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.concrete(node, a) for a in arg)
        if isinstance(arg, dict):
            return {k: self.concrete(node, a) for k, a in arg.items()}
        return arg

    def source_of(self, node: fx.Node) -> str:
        return str(node.target) if node.op == "call_module" else _where(node)

    # -- one op -----------------------------------------------------------------------------------------------
    def step(self, node: fx.Node) -> Lin | _Tuple | None:
        if node.op == "call_method" and node.target in ("size", "dim"):
            return None  # a shape, not a value: read from the recorded run where it is used
        if node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "dtype", "device"):
            return None
        if node.op == "call_module":
            return self.module(node, self.modules[str(node.target)])
        if node.op == "call_function":
            return self.function(node, node.target)
        if node.op == "call_method":
            return self.method(node, str(node.target))
        raise self.refuse(node)

    def module(self, node: fx.Node, mod: nn.Module) -> Lin | _Tuple:
        path = str(node.target)
        if isinstance(mod, (*_ACTIVATIONS_M, *_IDENTITY_M)):
            return self.same(node, node.args[0])
        if isinstance(mod, nn.LocalResponseNorm):
            self.notes.append(f"{path}: local response normalisation taken as the identity")
            return self.lin(node, node.args[0])
        if not isinstance(mod, _RULED_M):  # no rule: named as it is, whatever shape its input has
            before = self.vals.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
            if isinstance(before, _Refused):
                raise before.error
            raise self.refuse(node)
        x = self.lin(node, node.args[0])
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros":
                raise self.refuse(node, f"padding mode {mod.padding_mode}")
            d = conv_dense(_np(mod.weight), mod.stride, mod.padding, mod.dilation, mod.groups, path)
            return self.conv(node, x, d)
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if mod.running_var is None:
                raise self.refuse(node, "keeps no running statistics to fold")
            scale = 1.0 / torch.sqrt(mod.running_var + mod.eps)
            if mod.affine:
                scale = mod.weight.detach() * scale
            return Lin(x.channels, x.hw, _chain(x, _diag(_np(scale), path)), x.flat)
        if isinstance(mod, nn.Linear):
            return self.linear(node, x, _np(mod.weight), path)
        if isinstance(mod, nn.MaxPool2d):
            return self.pool(node, x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, "max", path)
        if isinstance(mod, nn.AvgPool2d):
            return self.pool(node, x, mod.kernel_size, mod.stride, mod.padding, 1, "avg", path)
        if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            op = "max" if isinstance(mod, nn.AdaptiveMaxPool2d) else "avg"
            return self.adaptive(node, x, mod.output_size, op, path)
        if isinstance(mod, nn.Flatten):
            return self.shape_op(node, lambda t: torch.flatten(t, mod.start_dim, mod.end_dim))
        raise self.refuse(node)  # in _RULED_M without a branch above: a bug here, said as a refusal

    def function(self, node: fx.Node, fn: Any) -> Lin | _Tuple:
        args, kwargs = node.args, node.kwargs
        where = self.source_of(node)
        if fn in _ACTIVATIONS_F or fn in _IDENTITY_F:
            return self.same(node, args[0])
        if fn is F.local_response_norm:
            self.notes.append(f"{where}: local response normalisation taken as the identity")
            return self.lin(node, args[0])
        if fn in _ADD or fn in _SUB:
            return self.add(node, args[0], args[1], -1.0 if fn in _SUB else 1.0)
        if fn in _MUL:
            return self.mul(node, args[0], args[1])
        if fn is operator.truediv:
            x = self.lin(node, args[0])
            d = self.concrete(node, args[1])
            if isinstance(d, (int, float)):
                return Lin(x.channels, x.hw, _chain(x, _scalar(1.0 / d)), x.flat)
            raise self.refuse(node, "division by a tensor")
        if fn is operator.neg:
            x = self.lin(node, args[0])
            return Lin(x.channels, x.hw, _chain(x, _scalar(-1.0)), x.flat)
        if fn is torch.cat or fn is torch.concat:
            return self.cat(node, args[0], _kw(args, kwargs, 1, "dim", 0))
        if fn is operator.getitem and isinstance(args[0], fx.Node) and isinstance(self.vals.get(args[0]), _Tuple):
            picked: Lin | _Tuple = self.vals[args[0]][args[1]]
            return picked
        if fn in _SHAPE_F:
            rest = self.concrete(node, args[1:])
            kw = self.concrete(node, dict(kwargs))
            return self.shape_op(node, lambda t: fn(t, *rest, **kw))
        if fn is F.conv2d:
            x = self.lin(node, args[0])
            w = self.concrete(node, _kw(args, kwargs, 1, "weight", None))
            d = conv_dense(
                _np(w),
                self.concrete(node, _kw(args, kwargs, 3, "stride", 1)),
                self.concrete(node, _kw(args, kwargs, 4, "padding", 0)),
                self.concrete(node, _kw(args, kwargs, 5, "dilation", 1)),
                self.concrete(node, _kw(args, kwargs, 6, "groups", 1)),
                where,
            )
            return self.conv(node, x, d)
        if fn is F.linear:
            x = self.lin(node, args[0])
            return self.linear(node, x, _np(self.concrete(node, _kw(args, kwargs, 1, "weight", None))), where)
        if fn is F.pad:
            x = self.lin(node, args[0])
            pad = self.concrete(node, _kw(args, kwargs, 1, "pad", None))
            mode = self.concrete(node, _kw(args, kwargs, 2, "mode", "constant"))
            if mode != "constant" or len(pad) != 4 or x.flat:
                raise self.refuse(node, f"padding {pad} in mode {mode}")
            return Lin(x.channels, x.hw, _chain(x, lambda s, e: L.Spatial(_ONE, (1, 1), (pad[2], pad[0]), where)))
        if fn is F.max_pool2d or fn is F.avg_pool2d:
            x = self.lin(node, args[0])
            size = self.concrete(node, _kw(args, kwargs, 1, "kernel_size", None))
            stride = self.concrete(node, _kw(args, kwargs, 2, "stride", None))
            padding = self.concrete(node, _kw(args, kwargs, 3, "padding", 0))
            dilation = self.concrete(node, _kw(args, kwargs, 4, "dilation", 1)) if fn is F.max_pool2d else 1
            op = "max" if fn is F.max_pool2d else "avg"
            return self.pool(node, x, size, stride, padding, dilation, op, where)
        if fn is F.adaptive_avg_pool2d or fn is F.adaptive_max_pool2d:
            x = self.lin(node, args[0])
            size = self.concrete(node, _kw(args, kwargs, 1, "output_size", None))
            return self.adaptive(node, x, size, "max" if fn is F.adaptive_max_pool2d else "avg", where)
        if fn is torch.mean:
            return self.mean(node, args[0], _kw(args, kwargs, 1, "dim", None), _kw(args, kwargs, 2, "keepdim", False))
        if fn is F.batch_norm:
            x = self.lin(node, args[0])
            var = self.concrete(node, _kw(args, kwargs, 2, "running_var", None))
            weight = self.concrete(node, _kw(args, kwargs, 3, "weight", None))
            training = self.concrete(node, _kw(args, kwargs, 5, "training", False))
            eps = self.concrete(node, _kw(args, kwargs, 7, "eps", 1e-5))
            if var is None or training:
                raise self.refuse(node, "batch statistics, not running ones")
            scale = 1.0 / torch.sqrt(var + eps)
            if weight is not None:
                scale = weight * scale
            return Lin(x.channels, x.hw, _chain(x, _diag(_np(scale), where)), x.flat)
        raise self.refuse(node)

    def method(self, node: fx.Node, name: str) -> Lin | _Tuple:
        args = node.args
        if name in _ACTIVATIONS_METHOD or name in _IDENTITY_METHOD:
            return self.same(node, args[0])
        if name in ("clamp", "clamp_", "clamp_min", "clamp_min_"):
            low = self.concrete(node, _kw(args, node.kwargs, 1, "min", None))
            high = self.concrete(node, _kw(args, node.kwargs, 2, "max", None))
            if low == 0 and high is None:  # a ReLU written as a clamp (lucent's InceptionV1)
                return self.lin(node, args[0])
            raise self.refuse(node, f"clamp to [{low}, {high}]")
        if name in ("add", "add_", "sub", "sub_"):
            return self.add(node, args[0], args[1], -1.0 if name.startswith("sub") else 1.0)
        if name in ("mul", "mul_"):
            return self.mul(node, args[0], args[1])
        if name == "mean":
            return self.mean(node, args[0], _kw(args, node.kwargs, 1, "dim", None), node.kwargs.get("keepdim", False))
        if name in _SHAPE_METHOD:
            rest = self.concrete(node, args[1:])
            kw = self.concrete(node, dict(node.kwargs))
            return self.shape_op(node, lambda t: getattr(t, name)(*rest, **kw))
        raise self.refuse(node)

    # -- rules ------------------------------------------------------------------------------------------------
    def conv(self, node: fx.Node, x: Lin, d: L.Dense) -> Lin:
        if x.flat:
            raise self.refuse(node, "a convolution over a flattened tensor")
        if d.in_channels != x.channels:
            raise self.refuse(node, f"{d.in_channels} channels in, the path has {x.channels}")
        out = self.run.shapes[node]
        return Lin(d.out_channels, (out[2], out[3]), self.collapse(_mix(x, d), d.out_channels))

    def collapse(self, terms: tuple[Term, ...], channels: int) -> tuple[Term, ...]:
        """Many terms into one map (a stage of shuffle blocks doubles its terms at each block): their sum."""
        if len(terms) <= _MAX_TERMS:
            return terms
        total = LinkProgram(self.in_channels, channels, terms).kernels(0, channels)
        return (Term(0, channels, (dataclasses.replace(total, parametric=True, source="sum of paths"),), "paths"),)

    def linear(self, node: fx.Node, x: Lin, w: np.ndarray, where: str) -> Lin:
        out = self.run.shapes[node]
        if len(out) != 2:
            raise self.refuse(node, "a linear layer over an axis other than a flattened map's")
        h, ww = x.hw
        if w.shape[1] == x.channels * h * ww and h * ww > 1:
            d = L.Dense(w.reshape(w.shape[0], x.channels, h, ww), (1, 1), (0, 0), True, where)
        elif w.shape[1] == x.channels:
            d = L.Dense(w[:, :, None, None], (1, 1), (0, 0), True, where)
        else:
            raise self.refuse(node, f"{w.shape[1]} inputs, the path has {x.channels}x{h}x{ww}")
        return Lin(d.out_channels, (1, 1), self.collapse(_mix(x, d), d.out_channels), flat=True)

    def pool(self, node: fx.Node, x: Lin, size: Any, stride: Any, pad: Any, dilation: Any, op: str, where: str) -> Lin:
        if _pair(dilation) != (1, 1):
            raise self.refuse(node, "dilated pooling")
        if x.flat:
            raise self.refuse(node, "pooling a flattened tensor")
        window, step = _pair(size), _pair(stride if stride not in (None, ()) else size)
        if op == "max":
            self.notes.append(f"{where}: max-pool {window[0]}x{window[1]}/{step[0]} linearised as its average")
        box = L.box(window, step, _pair(pad), where)
        out = self.run.shapes[node]
        return Lin(x.channels, (out[2], out[3]), _chain(x, lambda s, e: box))

    def adaptive(self, node: fx.Node, x: Lin, size: Any, op: str, where: str) -> Lin:
        h, w = x.hw
        oh, ow = _adaptive_size(size, h, w)
        if (h, w) == (oh, ow):
            return x
        if h % oh or w % ow:
            raise self.refuse(node, f"adaptive pooling {h}x{w} -> {oh}x{ow} is not one fixed window")
        if op == "max":
            self.notes.append(f"{where}: adaptive max-pool linearised as its average")
        box = L.box((h // oh, w // ow), (h // oh, w // ow), (0, 0), where)
        return Lin(x.channels, (oh, ow), _chain(x, lambda s, e: box))

    def mean(self, node: fx.Node, arg: Any, dim: Any, keepdim: Any) -> Lin:
        x = self.lin(node, arg)
        dims = self.concrete(node, dim)
        dims = tuple(sorted(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else (dims,))))
        if x.flat or dims != (2, 3):
            raise self.refuse(node, f"a mean over dimensions {dims}")
        h, w = x.hw
        box = L.box((h, w), (h, w), (0, 0), self.source_of(node))
        return Lin(x.channels, (1, 1), _chain(x, lambda s, e: box), flat=not self.concrete(node, keepdim))

    def add(self, node: fx.Node, a: Any, b: Any, sign: float) -> Lin:
        va, vb = self.vals.get(a) if isinstance(a, fx.Node) else None, None
        vb = self.vals.get(b) if isinstance(b, fx.Node) else None
        if _dep(va) and _dep(vb):
            x, y = self.lin(node, a), self.lin(node, b)
            if (x.channels, x.hw) != (y.channels, y.hw):
                raise self.refuse(node, "adding maps of different shapes")
            ys = y.terms if sign == 1.0 else _chain(y, _scalar(sign))
            return Lin(x.channels, x.hw, _refine((*x.terms, *ys), x.channels), x.flat and y.flat)
        if _dep(va):
            return self.lin(node, a)  # plus a constant: dropped like a bias
        y = self.lin(node, b)
        return y if sign == 1.0 else Lin(y.channels, y.hw, _chain(y, _scalar(-1.0)), y.flat)

    def mul(self, node: fx.Node, a: Any, b: Any) -> Lin:
        va = self.vals.get(a) if isinstance(a, fx.Node) else None
        vb = self.vals.get(b) if isinstance(b, fx.Node) else None
        if _dep(va) and _dep(vb):
            return self.gate(node, a, b)
        x_node, factor = (a, b) if _dep(va) else (b, a)
        x = self.lin(node, x_node)
        f = self.concrete(node, factor)
        if isinstance(factor, fx.Node) and factor not in self.run.static:
            raise self.refuse(node, "a product with a value that depends on the image")
        return self.scaled(node, x, f, "a constant")

    def scaled(self, node: fx.Node, x: Lin, f: Any, what: str) -> Lin:
        if isinstance(f, (int, float)):
            return Lin(x.channels, x.hw, _chain(x, _scalar(float(f))), x.flat)
        t = torch.as_tensor(f).detach().to(torch.float32)
        if t.numel() == 1:
            return Lin(x.channels, x.hw, _chain(x, _scalar(float(t.reshape(())))), x.flat)
        per_channel = t.reshape(-1) if (t.dim() >= 3 and t.shape[-1] == t.shape[-2] == 1) or x.flat else None
        if per_channel is None or per_channel.numel() != x.channels:
            raise self.refuse(node, f"a product with {what} of shape {tuple(t.shape)}, not one scale per channel")
        return Lin(x.channels, x.hw, _chain(x, _diag(per_channel.numpy(), self.source_of(node))), x.flat)

    def gate(self, node: fx.Node, a: fx.Node, b: fx.Node) -> Lin:
        """x * gate(x): the gate, [C, 1, 1], at its value for a zero x (a squeeze-excitation block)."""
        sa, sb = self.run.shapes.get(a, ()), self.run.shapes.get(b, ())

        def spatial(s: tuple[int, ...]) -> int:
            return int(np.prod(s[2:])) if len(s) == 4 else 0

        if len(sa) == 4 and len(sb) == 4 and spatial(sb) == 1 and spatial(sa) > 1:
            x_node, g_node = a, b
        elif len(sa) == 4 and len(sb) == 4 and spatial(sa) == 1 and spatial(sb) > 1:
            x_node, g_node = b, a
        else:
            raise self.refuse(node, "a product of two maps that both depend on the source")
        x = self.lin(node, x_node)
        value = self.evaluate(node, g_node, x_node)
        self.notes.append(f"{self.source_of(node)}: gate taken at its value for a zero input")
        return self.scaled(node, x, value, "a gate")

    def evaluate(self, at: fx.Node, node: fx.Node, zero: fx.Node) -> torch.Tensor:
        """``node``'s value when ``zero`` is zero, with the model's own functions (a gate's value)."""
        memo: dict[fx.Node, Any] = {zero: torch.zeros(self.run.shapes[zero])}

        def ev(n: fx.Node) -> Any:
            if n in memo:
                return memo[n]
            if n.op == "get_attr":
                memo[n] = _attr(self.gm, str(n.target))
            elif not _dep(self.vals.get(n)):
                if n not in self.run.values:
                    raise self.refuse(at, f"the gate depends on {n.name}, which is not recorded")
                if n not in self.run.static and n.op != "call_method":
                    raise self.refuse(at, f"the gate depends on the image through {n.name}")
                memo[n] = self.run.values[n]
            else:
                if n is self.src:
                    raise self.refuse(at, "the gate reads the source other than through the gated map")
                args = fx.node.map_arg(n.args, ev)
                kwargs = fx.node.map_arg(n.kwargs, ev)
                with torch.no_grad():
                    if n.op == "call_module":
                        memo[n] = self.modules[str(n.target)](*args, **kwargs)
                    elif n.op == "call_function":
                        memo[n] = n.target(*args, **kwargs)  # type: ignore[operator]
                    else:
                        memo[n] = getattr(args[0], str(n.target))(*args[1:], **kwargs)
            return memo[n]

        return torch.as_tensor(ev(node))

    def cat(self, node: fx.Node, parts: Any, dim: Any) -> Lin:
        shape = self.run.shapes[node]
        d = self.concrete(node, dim) % len(shape)
        if d != 1:
            raise self.refuse(node, f"a concatenation along dimension {d}")
        terms: list[Term] = []
        start = 0
        hw: tuple[int, int] = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
        for p in parts:
            v = self.vals.get(p) if isinstance(p, fx.Node) else None
            if _dep(v):
                v = self.lin(node, p)
                terms += [Term(t.start + start, t.stop + start, t.ops, t.label) for t in v.terms]
                start += v.channels
            else:  # a map that does not depend on the source: its channels have no inputs here
                start += self.run.shapes[p][1]
        return Lin(start, hw, tuple(terms), len(shape) == 2)

    def shape_op(self, node: fx.Node, fn: Callable[[torch.Tensor], Any]) -> Lin | _Tuple:
        x = self.vals.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        if isinstance(x, _Refused):  # e.g. ConvNeXt's permute back after its LayerNorm: the LayerNorm is the cause
            raise x.error
        if not isinstance(x, Lin):
            raise self.refuse(node, "a shape op on something other than a map")
        out = fn(_as_index(x))
        if isinstance(out, torch.Tensor):
            return _from_index(x, out)
        return _Tuple(_from_index(x, o) for o in out)


# -- small helpers --------------------------------------------------------------------------------------------

_ONE = np.ones((1, 1), dtype=np.float32)


def _scalar(s: float) -> Callable[[int, int], L.Spatial]:
    op = L.Spatial(np.full((1, 1), s, dtype=np.float32))
    return lambda start, stop: op


def _kw(args: Sequence[Any], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, torch.Tensor) else obj


def _geometry(shape: tuple[int, ...]) -> tuple[int, tuple[int, int], bool]:
    if len(shape) == 4:
        return shape[1], (shape[2], shape[3]), False
    if len(shape) == 2:
        return shape[1], (1, 1), True
    raise ExtractionError(f"a significant layer's output of shape {shape} is not [N, C, H, W] or [N, C]")


# -- the entry point ---------------------------------------------------------------------------------------------


def links(model: nn.Module, arch: Architecture) -> tuple[list[LayerShape], list[Link]]:
    """Significant layers with their measured shapes, and the link program between each consecutive pair:
    what ``kb.graph.extract.links`` returns, for an architecture with no hand-written trunk."""
    gm = _trace(model, arch)
    run = _record(gm, arch)
    outputs = _outputs(gm, arch)
    layer_shapes = []
    for spec in arch.layers:
        shape = run.shapes.get(outputs[spec.module])
        if shape is None:
            raise ExtractionError(f"{arch.source}: layer {spec.name} ({spec.module}) does not output a tensor")
        channels, _, _ = _geometry(shape)
        layer_shapes.append(LayerShape(spec.name, channels, tuple(shape[1:])))
    result = []
    for a, b in zip(arch.layers, arch.layers[1:], strict=False):
        walker = _Linearizer(gm, run, a.name, b.name, outputs[a.module], outputs[b.module])
        result.append(Link(a.name, b.name, walker.program()))
    return layer_shapes, result
