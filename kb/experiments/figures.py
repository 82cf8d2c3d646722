"""The formulas of a circuit check, on numbers already measured (no torch).

m(X) is the target unit's activation, reduced over positions (``REDUCTION``), averaged over the images, with
the inputs of the target's layer that X does not keep ablated. M is the full model (nothing ablated), ∅ has every
input of the target's layer ablated, C keeps only the circuit's inputs.

- sufficiency  f(C)        = (m(C) - m(∅)) / (m(M) - m(∅))
- necessity    1 - f(M\\C)  = 1 - (m(M\\C) - m(∅)) / (m(M) - m(∅))   (only the circuit's inputs ablated)
- an edge's own effect     = (m(M) - m(M\\{s})) / (m(M) - m(∅))    (only its source s ablated)
- random baseline: the same two measures for random sets of as many inputs of the same layer (mean, std)

When m(M) = m(∅) (the ablation does not move the unit on these images) the ratios are undefined: None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ABLATIONS = ("zero", "mean", "resample")
REDUCTION = "mean"  # over the target's positions; kept for every check (kb.experiments.measure)
DRAWS = 10  # random circuits per measure
EPS = 1e-12


def ratio(m: float, m_full: float, m_empty: float) -> float | None:
    """(m - m(∅)) / (m(M) - m(∅)), None where the denominator is zero."""
    denom = m_full - m_empty
    if not math.isfinite(denom) or abs(denom) <= EPS * max(1.0, abs(m_full), abs(m_empty)):
        return None
    return (m - m_empty) / denom


def sufficiency(m_c: float, m_full: float, m_empty: float) -> float | None:
    return ratio(m_c, m_full, m_empty)


def necessity(m_without_c: float, m_full: float, m_empty: float) -> float | None:
    f = ratio(m_without_c, m_full, m_empty)
    return None if f is None else 1.0 - f


def edge_effect(m_without_s: float, m_full: float, m_empty: float) -> float | None:
    f = ratio(m_without_s, m_full, m_empty)
    return None if f is None else 1.0 - f


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """{mean, std, draws, values} of the defined values (std: sample standard deviation, ddof 1)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"mean": None, "std": None, "draws": 0, "values": []}
    mean = sum(got) / len(got)
    std = math.sqrt(sum((v - mean) ** 2 for v in got) / (len(got) - 1)) if len(got) > 1 else 0.0
    return {"mean": mean, "std": std, "draws": len(got), "values": got}


SIGMAS = 2  # a circuit "beats random" when its figure is more than this many standard deviations above the draws'


def beats_random(value: float | None, random: dict[str, Any]) -> bool | None:
    """Whether a circuit's figure is more than SIGMAS standard deviations above the mean of the same figure for the
    random circuits (``spread``'s dict); None when either is undefined (m(M) = m(∅), no draws)."""
    if value is None or random.get("mean") is None or random.get("std") is None:
        return None
    return bool(value > random["mean"] + SIGMAS * random["std"])


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def badges(experiment: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """The badges of one target unit's figures, as the circuit page shows them: "sufficiency 0.82", "necessity
    0.64", "random 0.05 ± 0.03", "mean ablation", "256 images of digits"."""
    rnd = target["random"]["sufficiency"]
    random = "random n/a" if rnd["mean"] is None else f"random {rnd['mean']:.2f} ± {rnd['std']:.2f}"
    p = experiment["params"]
    return [
        f"sufficiency {fmt(target['sufficiency'])}",
        f"necessity {fmt(target['necessity'])}",
        random,
        f"{p['ablation']} ablation",
        f"{p['images']} images of {p['dataset']}",
    ]


ABLATION_POINT = (
    "a source unit is ablated at its layer's output (the module the zoo declares for the layer), at every position, "
    "before anything after that layer reads it: every path an expanded-weight edge stands for (Inception branches, a "
    "ResNet block's branch and shortcut, pooling) starts there and sees the ablated value"
)
