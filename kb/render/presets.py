"""The render choices the pages offer: named parameter presets and the kinds a person picks from.

``thumbnail`` is the knowledge base's thumbnail preset (kb.render.thumbnails: ``KB_THUMBNAIL_SIZE``/``_STEPS``,
64 px and 16 steps by default), the small picture every unit card shows, cheap enough to ask for a whole layer;
``microscope`` (128 px, 512 steps: lucent's defaults, as OpenAI Microscope showed units) is the full picture.
A choice of kind is a render kind plus what it changes in the parameters (the negative visualization is
FEATURE_VIS with ``negative``; dataset examples name a data set)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kb.render import thumbnails
from kb.render.params import RenderParams
from kb.settings import Settings


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    params: RenderParams


MICROSCOPE = Preset("microscope", "Microscope (128 px, 512 steps)", RenderParams(size=128, steps=512))
DEFAULT = "thumbnail"


def presets(settings: Settings) -> dict[str, Preset]:
    """The presets by name, the thumbnail one as this knowledge base's settings make it."""
    t = thumbnails.preset(settings)
    return {"thumbnail": Preset("thumbnail", f"Thumbnail ({t.size} px, {t.steps} steps)", t), "microscope": MICROSCOPE}


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


def preset(name: str, settings: Settings) -> Preset:
    """The preset by name; UnknownChoice names the presets."""
    known = presets(settings)
    if name not in known:
        raise UnknownChoice(f"preset must be one of {', '.join(known)}")
    return known[name]


def render_choice(kind: str, preset_name: str, settings: Settings, dataset: str = "") -> tuple[str, RenderParams]:
    """(render kind, parameters) for a page's choice of kind and preset (and data set, for dataset examples)."""
    if kind not in CHOICES:
        raise UnknownChoice(f"kind must be one of {', '.join(CHOICES)}")
    choice, p = CHOICES[kind], preset(preset_name, settings).params
    if choice.negative:
        p = replace(p, negative=True)
    if choice.needs_dataset:
        if not dataset:
            raise UnknownChoice("dataset examples need a data set: add one with kb dataset add NAME PATH")
        p = replace(p, dataset=dataset)
    return choice.kind, p
