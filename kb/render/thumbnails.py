"""The thumbnail preset: the one render every unit card shows (a cheap feature visualization), and how a card
picks its picture. Everything that shows or asks for a unit's thumbnail takes the preset from here.

The preset is FEATURE_VIS at ``KB_THUMBNAIL_SIZE`` px (64) and ``KB_THUMBNAIL_STEPS`` steps (16), seed 0, every
other parameter lucent's default (kb.render.params.RenderParams). A card without it shows another positive
feature visualization of the unit (the largest) as a *fallback*, which the card marks with its parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kb.render.params import RenderParams, params_hash
from kb.settings import Settings

KIND = "FEATURE_VIS"
SHOWN = ("size", "steps", "seed")  # the parameters a fallback's mark names


def preset(settings: Settings) -> RenderParams:
    """The thumbnail preset of this knowledge base (the same for every model)."""
    return RenderParams(size=settings.thumbnail_size, steps=settings.thumbnail_steps, seed=0)


def preset_params(settings: Settings) -> dict[str, Any]:
    """The preset as a job stores its parameters (only those that change a FEATURE_VIS image)."""
    return preset(settings).relevant(KIND)


def preset_hash(settings: Settings) -> str:
    return params_hash(KIND, preset_params(settings))


@dataclass(frozen=True)
class Picture:
    url: str
    fallback: str = ""  # not the preset: the parameters it was rendered with ("size 128, steps 512, seed 0")
    size: int = 0

    @property
    def is_preset(self) -> bool:
        return not self.fallback

    @property
    def badge(self) -> str:
        """A fallback's corner mark: its size."""
        return f"{self.size}px" if self.fallback else ""


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {params[k]}" for k in SHOWN if k in params)


def pick(visualizations: Iterable[Mapping[str, Any]] | None, preset: dict[str, Any]) -> Picture | None:
    """A card's picture among a unit's finished renders (each with ``kind``, ``params`` (a dict or its JSON) and
    ``url``): the preset's, else the largest positive feature visualization (a fallback), else None."""
    best: tuple[int, str, dict[str, Any]] | None = None
    for v in visualizations or ():
        if v["kind"] != KIND:
            continue
        p = v["params"] if isinstance(v["params"], dict) else json.loads(v["params"])
        if p == preset:
            return Picture(v["url"], size=p.get("size", 0))
        if p.get("negative"):
            continue
        if best is None or p.get("size", 0) > best[0]:
            best = (p.get("size", 0), v["url"], p)
    return Picture(best[1], describe(best[2]), best[0]) if best else None
