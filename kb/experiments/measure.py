"""The measurement of a circuit check, on a model and a batch of images (torch; knows no database or queue).

**Where a source is ablated.** A source unit is a channel of its significant layer, and it is ablated at that
layer's output: the output of the module the zoo declares for the layer (``LayerSpec.module``), every position,
before anything after the layer reads it. Whatever path an expanded-weight edge stands for (through an Inception
block's branches, a ResNet block's branch and its shortcut, a pooling window), every path from the source to the
target starts there, so all of them see the ablated value: an ablated unit is one the rest of the network never saw.

**Ablations** (replacing the unit's whole map): ``zero`` (0), ``mean`` (its mean over the image set, position by
position), ``resample`` (its map on another image of the set: each ablated channel follows its own seeded random
cyclic permutation of the images, so no image keeps its own value and channels are not resampled together).

**m** is the target unit's map reduced over positions by ``REDUCTION`` (the mean), averaged over the images.

**Cost.** The activations of the source layer are computed once per image (a pass stopped at that layer) and
reused by every condition (full model, ∅, C, M\\C, each edge, each random draw). A condition's pass starts from
those activations: the model runs on one small probe image (a crop) up to the source layer, whose output a hook
replaces with the condition's batch, and a hook at the target layer ends the pass (nothing after it is computed).
Conditions are batched together, so one pass carries several conditions of several images; within those passes
the model may compute only what the measured units need (kb.experiments.narrow: skipped branches, sliced
convolutions).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kb.experiments import figures
from kb.render.hooks import forward_hooks, run_until_stop, stop_at

Progress = Callable[[int, int], None]
Narrow = Callable[[list[int], Callable[[torch.nn.Module], object]], AbstractContextManager[object]]


@dataclass(frozen=True)
class Condition:
    """Which units of the source layer keep their value: ``keep`` (only these) or, if not ``keep``, all but them."""

    keep: bool
    units: frozenset[int]

    def mask(self, channels: int) -> torch.Tensor:
        m = torch.zeros(channels, dtype=torch.bool)
        if self.units:
            m[list(self.units)] = True
        return m if self.keep else ~m


FULL = Condition(False, frozenset())  # M: nothing ablated
EMPTY = Condition(True, frozenset())  # ∅: every input of the layer ablated


def source_activations(
    model: torch.nn.Module, source: torch.nn.Module, images: torch.Tensor, batch: int, progress: Progress | None = None
) -> torch.Tensor:
    """The source layer's output for every image ([N, C, H, W]), each image's pass stopped at that layer."""
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for lo in range(0, len(images), batch):
            got: list[torch.Tensor] = []
            with forward_hooks([stop_at(source, got.append)]):
                run_until_stop(model, images[lo : lo + batch])
            if not got:
                raise ValueError("the source layer's module did not run in the model's forward pass")
            parts.append(got[0].detach().float())
            if progress:
                progress(min(lo + batch, len(images)), len(images))
    return torch.cat(parts)


def replacements(acts: torch.Tensor, ablation: str, seed: int) -> torch.Tensor:
    """What an ablated unit's map becomes: [1, C, H, W] (zero, mean) or [N, C, H, W] (resample)."""
    if ablation == "zero":
        return torch.zeros_like(acts[:1])
    if ablation == "mean":
        return acts.mean(0, keepdim=True)
    if ablation == "resample":
        n, c = acts.shape[:2]
        if n < 2:
            raise ValueError("resample ablation needs at least 2 images")
        rng = np.random.default_rng([seed, 0])
        order = np.argsort(rng.random((c, n)), axis=1)  # a random order of the images per channel...
        other = np.empty_like(order)
        rows = np.arange(c)[:, None]
        other[rows, order] = np.roll(order, -1, axis=1)  # ...whose cycle sends each image to the next one
        index = torch.from_numpy(other.T.copy())  # [N, C]: the image whose map channel c of image i takes
        return acts[index, torch.arange(c)[None, :]]
    raise ValueError(f"ablation must be one of {', '.join(figures.ABLATIONS)}")


def _downstream(
    model: torch.nn.Module, source: torch.nn.Module, target: torch.nn.Module, probe: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """The target layer's output when the source layer's output is ``x``: one probe image runs up to the source
    layer (its output is replaced by ``x``, any batch size), and the pass ends at the target layer."""
    out: list[torch.Tensor] = []

    def replace(_module: torch.nn.Module, _inputs: object, _output: object) -> torch.Tensor:
        return x

    def keep(y: torch.Tensor) -> None:
        out.append(y)

    with forward_hooks([(source, replace), stop_at(target, keep)]):
        run_until_stop(model, probe)
    if not out:
        raise ValueError("the target layer's module did not run after the source layer's")
    return out[0]


def small_probe(model: torch.nn.Module, source: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The smallest crop of ``image`` (16, 32, 64... px) whose pass reaches the source layer: a condition's pass
    runs the probe up to the source layer only to have its output replaced, so the probe's size is what that
    costs (a 224 px probe of InceptionV1 costs as much as one image's pass)."""
    size = 16
    while size < min(image.shape[-2:]):
        got: list[torch.Tensor] = []
        try:
            with torch.no_grad(), forward_hooks([stop_at(source, got.append)]):
                run_until_stop(model, image[..., :size, :size])
            if got:
                return image[..., :size, :size].contiguous()
        except RuntimeError:  # too small for a layer below the source (a kernel larger than its input)
            pass
        size *= 2
    return image


def measure_conditions(
    model: torch.nn.Module,
    source: torch.nn.Module,
    target: torch.nn.Module,
    acts: torch.Tensor,
    repl: torch.Tensor,
    conditions: list[Condition],
    units: list[int],
    probe: torch.Tensor,
    batch: int = 64,
    progress: Progress | None = None,
    narrow: Narrow | None = None,
) -> dict[Condition, np.ndarray]:
    """m of each target unit (``units``, in order) under each condition: {condition: [len(units)] float64}."""
    n, channels = acts.shape[:2]
    per = min(n, batch)  # images per pass, and conditions per pass so that a pass holds about ``batch`` maps
    together = max(1, batch // per)
    masks = {c: c.mask(channels).to(acts.device)[None, :, None, None] for c in conditions}
    sums = {c: np.zeros(len(units)) for c in conditions}
    idx = torch.tensor(units, dtype=torch.long, device=acts.device)
    steps = -(-n // per) * -(-len(conditions) // together)
    step = 0
    only = narrow(units, lambda m: _downstream(m, source, target, probe, acts[:1])) if narrow else nullcontext()
    with torch.no_grad(), only:
        for lo in range(0, n, per):
            a = acts[lo : lo + per]
            r = repl if repl.shape[0] == 1 else repl[lo : lo + per]
            for k in range(0, len(conditions), together):
                chunk = conditions[k : k + together]
                x = torch.cat([torch.where(masks[c], a, r) for c in chunk])
                y = _downstream(model, source, target, probe, x.contiguous(memory_format=torch.channels_last))
                per_map = y.index_select(1, idx).float().flatten(2).mean(2)  # REDUCTION: the mean over positions
                m = per_map.reshape(len(chunk), len(a), len(units)).sum(1).double().cpu().numpy()
                for c, row in zip(chunk, m, strict=True):
                    sums[c] += row
                step += 1
                if progress:
                    progress(step, steps)
    return {c: s / n for c, s in sums.items()}


def draws_for(unit: int, size: int, channels: int, seed: int, draws: int) -> list[list[int]]:
    """The random circuits of a target unit: ``draws`` sets of ``size`` inputs of the source layer, drawn without
    replacement from all its units, seeded by (seed, unit)."""
    rng = np.random.default_rng([seed, 1, unit])
    return [sorted(int(i) for i in rng.choice(channels, size=min(size, channels), replace=False)) for _ in range(draws)]


@dataclass(frozen=True)
class _Plan:
    """The conditions one target unit is measured under."""

    circuit: tuple[Condition, Condition]  # (only the circuit kept, the circuit ablated)
    edges: list[Condition]  # each of the circuit's inputs ablated alone
    random: list[tuple[Condition, Condition]]  # each random circuit: (only it kept, it ablated)
    sets: list[list[int]]  # the random circuits' units


def check(
    model: torch.nn.Module,
    source: torch.nn.Module,
    target: torch.nn.Module,
    images: torch.Tensor,
    circuit: dict[int, list[int]],
    ablation: str,
    seed: int = 0,
    draws: int = figures.DRAWS,
    batch: int = 64,
    progress: Progress | None = None,
    acts: torch.Tensor | None = None,
    narrow: Narrow | None = None,
) -> list[dict[str, Any]]:
    """The figures of each target unit of ``circuit`` ({target unit: its circuit's inputs in the source layer}),
    measured on ``images`` (preprocessed as the model takes them), in target order. ``acts``: the source layer's
    activations if already computed for these images. ``narrow(units, probe)``: a context in which the model
    computes only what those target units need (kb.experiments.narrow.narrowed)."""
    if ablation not in figures.ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(figures.ABLATIONS)}")
    if acts is None:
        acts = source_activations(model, source, images, batch, None)
    channels = acts.shape[1]
    repl = replacements(acts, ablation, seed)
    units = sorted(circuit)
    plans: dict[int, _Plan] = {}
    conditions: dict[Condition, None] = {FULL: None, EMPTY: None}
    for u in units:
        c = frozenset(circuit[u])
        bad = sorted(i for i in c if not 0 <= i < channels)
        if bad:
            raise ValueError(f"unit {bad[0]} is not in the source layer ({channels} units)")
        sets = draws_for(u, len(c), channels, seed, draws)
        plan = _Plan(
            circuit=(Condition(True, c), Condition(False, c)),
            edges=[Condition(False, frozenset([s])) for s in sorted(c)],
            random=[(Condition(True, frozenset(s)), Condition(False, frozenset(s))) for s in sets],
            sets=sets,
        )
        plans[u] = plan
        for cond in (*plan.circuit, *plan.edges, *(x for pair in plan.random for x in pair)):
            conditions[cond] = None
    probe = small_probe(model, source, images[:1])
    m = measure_conditions(model, source, target, acts, repl, list(conditions), units, probe, batch, progress, narrow)
    out = []
    for i, u in enumerate(units):
        plan = plans[u]
        full, empty = float(m[FULL][i]), float(m[EMPTY][i])
        keep_c, drop_c = (float(m[x][i]) for x in plan.circuit)
        out.append(
            {
                "target": u,
                "sources": sorted(circuit[u]),
                "m_full": full,
                "m_empty": empty,
                "m_circuit": keep_c,
                "m_without_circuit": drop_c,
                "sufficiency": figures.sufficiency(keep_c, full, empty),
                "necessity": figures.necessity(drop_c, full, empty),
                "random": {
                    "sets": plan.sets,
                    "sufficiency": figures.spread(
                        [figures.sufficiency(float(m[k][i]), full, empty) for k, _ in plan.random]
                    ),
                    "necessity": figures.spread(
                        [figures.necessity(float(m[d][i]), full, empty) for _, d in plan.random]
                    ),
                },
                "edges": [
                    {
                        "source": next(iter(e.units)),
                        "m_without": float(m[e][i]),
                        "effect": figures.edge_effect(float(m[e][i]), full, empty),
                    }
                    for e in plan.edges
                ],
            }
        )
    return out
