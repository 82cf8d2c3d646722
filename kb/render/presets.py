"""The render choices the pages offer: named parameter presets and the kinds a person picks from.

``thumbnail`` (64 px, 16 steps) is the small picture a layer's grid shows, cheap enough to ask for a whole layer;
``microscope`` (128 px, 512 steps: lucent's defaults, as OpenAI Microscope showed units) is the full picture.
A choice of kind is a render kind plus what it changes in the parameters (the negative visualization is
FEATURE_VIS with ``negative``; dataset examples name a data set)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kb.render.params import RenderParams


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    params: RenderParams


PRESETS = {
    "thumbnail": Preset("thumbnail", "Thumbnail (64 px, 16 steps)", RenderParams(size=64, steps=16)),
    "microscope": Preset("microscope", "Microscope (128 px, 512 steps)", RenderParams(size=128, steps=512)),
}
DEFAULT = "thumbnail"


@dataclass(frozen=True)
class Choice:
    name: str
    title: str
    kind: str  # the render kind (kb.render.params.KINDS)
    negative: bool = False
    needs_dataset: bool = False


CHOICES = {
    c.name: c
    for c in (
        Choice("feature", "Feature visualization", "FEATURE_VIS"),
        Choice("negative", "Negative feature visualization", "FEATURE_VIS", negative=True),
        Choice("neuron", "Neuron (centre position)", "NEURON_VIS"),
        Choice("dataset", "Dataset examples", "DATASET_EXAMPLES", needs_dataset=True),
    )
}


class UnknownChoice(ValueError):
    pass


def preset(name: str) -> Preset:
    """The preset by name; UnknownChoice names the presets."""
    if name not in PRESETS:
        raise UnknownChoice(f"preset must be one of {', '.join(PRESETS)}")
    return PRESETS[name]


def render_choice(kind: str, preset_name: str, dataset: str = "") -> tuple[str, RenderParams]:
    """(render kind, parameters) for a page's choice of kind and preset (and data set, for dataset examples)."""
    if kind not in CHOICES:
        raise UnknownChoice(f"kind must be one of {', '.join(CHOICES)}")
    choice, p = CHOICES[kind], preset(preset_name).params
    if choice.negative:
        p = replace(p, negative=True)
    if choice.needs_dataset:
        if not dataset:
            raise UnknownChoice("dataset examples need a data set: add one with kb dataset add NAME PATH")
        p = replace(p, dataset=dataset)
    return choice.kind, p
