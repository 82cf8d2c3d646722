"""Which layers of any ``torch.nn.Module`` are significant: a default rule, or the names and globs a researcher
gives (``--layers layer1,layer2.*``), as the module paths ``model.named_modules()`` shows.

The default rule, read from the module tree and one forward pass (hooks removed in ``finally``):

- the root's children, and the children of every plain ``nn.Sequential`` (its own ``forward``), are walked in order;
- a walked leaf convolution or linear layer is significant (its output);
- a walked plain ``nn.Sequential`` of leaves with at most one convolution or linear layer (conv-BN-activation)
  is significant as a whole; one with more is walked;
- any other walked module with children is a block, significant as a whole (ResNet's BasicBlock, MobileNet's
  InvertedResidual, a Fire module, a DenseNet block), unless its output *is* the output of a child
  ``nn.Sequential`` of two or more blocks of one class (a stage that runs a downsample, then its blocks): then the
  children are walked, those before the run only where the run starts from their output; and so are a module's
  own children where they are two or more blocks of one class run in a row, each on the last one's output
  (timm's RegStage). (A MobileNet block's
  inner ``nn.Sequential`` of conv-BN-activation units is not such a run: the block stays whole.)

Modules run more than once in the forward pass (a ReLU a block reuses) or never are not layers; the layers are
ordered as the forward pass reaches them, and the last one is the module whose output is the model's output
(the classifier) wherever that is a module's output.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from kb.graph.zoo.spec import LayerSpec

LAYER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # a module path that is a valid layer key
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)


class LayerChoiceProblem(ValueError):
    pass


@dataclass(frozen=True)
class _Run:
    """What one forward pass saw of each module: how often it ran, in which order, what it took and gave."""

    calls: dict[str, int]
    order: dict[str, int]  # first call's position
    inputs: dict[str, int]  # id() of the first tensor argument of the first call
    outputs: dict[str, int]  # id() of the output tensor of the first call
    model_output: int
    sequential_values: dict[str, torch.Tensor]  # a plain nn.Sequential's output as it left it (a copy)
    final_values: dict[str, torch.Tensor]  # every module's output after its own forward ended


def _is_plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _weighted(m: nn.Module) -> bool:
    return isinstance(m, _WEIGHTED)


def _run(model: nn.Module, input_shape: tuple[int, ...]) -> _Run:
    calls: dict[str, int] = {}
    order: dict[str, int] = {}
    inputs: dict[str, int] = {}
    outputs: dict[str, int] = {}
    keep: list[object] = []  # the tensors whose id() is recorded stay alive, so no id is reused
    sequential_values: dict[str, torch.Tensor] = {}
    final_values: dict[str, torch.Tensor] = {}
    # outputs a block may still change in place (result += x) before it returns: copied as they leave
    plain = {p for p, m in model.named_modules() if _is_plain_sequential(m)}
    plain |= {f"{p}.{n}" if p else n for p, m in model.named_modules() if _repeats(m) for n, _ in m.named_children()}

    def hook(path: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def record(module: nn.Module, args: tuple[object, ...], out: object) -> None:
            calls[path] = calls.get(path, 0) + 1
            if path in order:
                return
            order[path] = len(order)
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                inputs[path] = id(first)
                keep.append(first)
            if isinstance(out, torch.Tensor):
                outputs[path] = id(out)
                keep.append(out)
                final_values[path] = out
                if path in plain:
                    sequential_values[path] = out.clone()

        return record

    handles = []
    try:
        for path, mod in model.named_modules():
            if path:
                handles.append(mod.register_forward_hook(hook(path)))
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(0)  # not zeros: an in-place residual add of zeros changes nothing
        with torch.no_grad():
            out = model(torch.randn((1, *input_shape), generator=generator))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    keep.append(out)
    model_output = id(out) if isinstance(out, torch.Tensor) else -1
    return _Run(calls, order, inputs, outputs, model_output, sequential_values, final_values)


def _default(model: nn.Module, run: _Run) -> list[str]:
    chosen: list[str] = []

    def walk_children(prefix: str, mod: nn.Module) -> None:
        for name, child in mod.named_children():
            visit(f"{prefix}{name}", child)

    def visit(path: str, mod: nn.Module) -> None:
        children = list(mod.named_children())
        if not children:
            if _weighted(mod):
                chosen.append(path)
            return
        if _is_plain_sequential(mod):
            leaves = all(not list(c.children()) for _, c in children)
            if leaves and sum(_weighted(c) for _, c in children) <= 1:
                if any(_weighted(c) for _, c in children):
                    chosen.append(path)
                return
            walk_children(f"{path}.", mod)
            return
        if _chained(path, mod, run):  # a stage that is its blocks in a row (timm's RegStage: b1, b2, ...)
            walk_children(f"{path}.", mod)
            return
        run_child = _stage_run(path, mod, run)
        if run_child is None:
            if any(_weighted(m) for m in mod.modules()):
                chosen.append(path)
            return
        before = []
        for name, child in children:
            if name == run_child:
                break
            before.append((f"{path}.{name}", child))
        start = run.inputs.get(f"{path}.{run_child}")
        for p, child in before:  # a downsample before the blocks: only where the blocks start from its output
            if run.outputs.get(p) == start and start is not None:
                visit(p, child)
        visit(f"{path}.{run_child}", getattr(mod, run_child))

    walk_children("", model)
    return chosen


def _repeats(mod: nn.Module) -> bool:
    """Whether ``mod`` has two or more child blocks of one class (not conv-BN-activation units)."""
    kinds = Counter(type(c) for c in mod.children() if list(c.children()) and not _is_plain_sequential(c))
    return bool(kinds) and max(kinds.values()) >= 2


def _chained(path: str, mod: nn.Module, run: _Run) -> bool:
    """Whether ``mod``'s children are blocks run one after the other, each on the last one's output, the last
    one's output (untouched) being ``mod``'s: then each child's output is a layer."""
    if not _repeats(mod):
        return False
    names = [f"{path}.{n}" for n, _ in mod.named_children()]
    if any(run.calls.get(n, 0) != 1 for n in names):
        return False
    names.sort(key=lambda n: run.order[n])
    linked = all(run.inputs.get(b) == run.outputs.get(a) is not None for a, b in pairwise(names))
    last = names[-1]
    return linked and run.outputs.get(last) == run.outputs.get(path) and _unchanged(last, path, run)


def _stage_run(path: str, mod: nn.Module, run: _Run) -> str | None:
    """The child ``nn.Sequential`` holding two or more blocks of one class (not conv-BN-activation units) whose
    output is ``mod``'s own output, untouched, if any."""
    out = run.outputs.get(path)
    for name, child in mod.named_children():
        if not _is_plain_sequential(child):
            continue
        kinds = Counter(type(c) for c in child.children() if list(c.children()) and not _is_plain_sequential(c))
        p = f"{path}.{name}"
        same_output = out is not None and run.outputs.get(p) == out and _unchanged(p, path, run)
        if kinds and max(kinds.values()) >= 2 and same_output:
            return name
    return None


def _unchanged(inner: str, outer: str, run: _Run) -> bool:
    """Whether ``outer``'s output is ``inner``'s as ``inner`` left it (no residual added to it in place)."""
    before, after = run.sequential_values.get(inner), run.final_values.get(outer)
    return before is not None and after is not None and torch.equal(before, after)


def _classifier(run: _Run, chosen: list[str], modules: dict[str, nn.Module]) -> str | None:
    """The module whose output is the model's output (the last linear layer, or a head), unless one chosen is."""
    found = [p for p, o in run.outputs.items() if o == run.model_output and any(True for _ in modules[p].parameters())]
    if not found or any(p in chosen for p in found):
        return None
    return max(found, key=lambda p: p.count("."))


def _nearest(name: str, paths: list[str]) -> str:
    close = difflib.get_close_matches(name, paths, n=5, cutoff=0.4)
    return ", ".join(close) if close else ", ".join(p for p in paths if "." not in p)[:300]


def _matches(path: str, pattern: str) -> bool:
    """A glob over module paths: ``*`` and ``?`` stay within one name (``layer2.*``: layer2's blocks, not their
    convolutions); ``**`` crosses dots (``layer2.**``: every module under layer2)."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(path, pattern.replace("**", "*"))
    return path.count(".") == pattern.count(".") and fnmatch.fnmatchcase(path, pattern)


def _selected(patterns: list[str], paths: list[str], run: _Run) -> list[str]:
    """The modules named or matched; a glob skips modules that run more than once (a reused ReLU) or never."""
    out: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            hits = [p for p in paths if _matches(p, pattern) and run.calls.get(p, 0) == 1]
        else:
            hits = [pattern] if pattern in paths else []
        if not hits:
            raise LayerChoiceProblem(f"no module {pattern!r} in this model; nearest: {_nearest(pattern, paths)}")
        out += [h for h in hits if h not in out]
    return out


def choose(
    model: nn.Module, input_shape: tuple[int, ...], layers: str | None = None, source: str = "the model"
) -> tuple[LayerSpec, ...]:
    """The significant layers of ``model``: by the default rule, or the comma-separated names and globs of
    ``layers`` (module paths). Ordered as the forward pass reaches them."""
    run = _run(model, input_shape)
    modules = dict(model.named_modules())
    paths = [p for p in modules if p]
    if layers is None:
        names = _default(model, run)
        head = _classifier(run, names, modules)
        if head is not None and head not in names:
            names.append(head)
    else:
        patterns = [p.strip() for p in layers.split(",") if p.strip()]
        if not patterns:
            raise LayerChoiceProblem("--layers names no module")
        names = _selected(patterns, paths, run)
        twice = [n for n in names if run.calls.get(n, 0) > 1]
        never = [n for n in names if run.calls.get(n, 0) == 0]
        if twice:
            raise LayerChoiceProblem(
                f"{source}: module {twice[0]!r} runs {run.calls[twice[0]]} times in one forward pass, so its "
                f"output is not one layer; choose the block around it"
            )
        if never:
            raise LayerChoiceProblem(f"{source}: module {never[0]!r} does not run in the forward pass")
    names = [n for n in names if run.calls.get(n, 0) == 1 and n in run.outputs]
    if not names:
        raise LayerChoiceProblem(f"{source}: no module with a tensor output was chosen")
    bad = next((n for n in names if not LAYER_NAME.match(n)), None)
    if bad is not None:
        raise LayerChoiceProblem(
            f"{source}: module path {bad!r} is not a valid layer key (letters, digits, '_', '.', '-', at most 64)"
        )
    names.sort(key=lambda n: run.order[n])
    return tuple(LayerSpec(n, n, _kind(modules[n]), (_kind(modules[n]),)) for n in names)


def _kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, _WEIGHTED):
        return "conv"
    return "block"
