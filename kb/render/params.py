"""Render kinds and their parameters: defaults, ranges, and the hash that makes requests idempotent."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from kb.errors import Problem
from kb.settings import Settings

KINDS = ("FEATURE_VIS", "NEURON_VIS", "DATASET_EXAMPLES", "WEIGHTS")  # one picture per unit
LAYER_KINDS = ("DEEPDREAM", "CARICATURE")  # one picture per layer (kb.render.layer_views)
ALL_KINDS = KINDS + LAYER_KINDS
PARAMETERIZATIONS = ("fft", "pixel")
TRANSFORMS = ("standard", "none")
SHA256 = re.compile(r"[0-9a-f]{64}")


class BadParams(Problem, ValueError):
    code = "BAD_INPUT"


class AboveCeiling(Problem, ValueError):
    """A parameter within its range but above the operator's ceiling (KB_RENDER_MAX_*)."""

    code = "LIMIT_EXCEEDED"


# the ceilings an operator sets (kb.settings): parameter -> the setting's name (without KB_), lowered
CEILINGS = {"size": "render_max_size", "steps": "render_max_steps", "upsample": "render_max_upsample"}


@dataclass(frozen=True)
class RenderParams:
    """lucent's defaults: 128 px, 512 steps, FFT parameterisation, decorrelated colour, standard transforms,
    Adam at 0.05, upsampled to 224 px before the model."""

    size: int = 128
    steps: int = 512
    seed: int = 0
    parameterization: str = "fft"
    transforms: str = "standard"
    negative: bool = False
    lr: float = 0.05
    upsample: int = 224  # 0: feed the image at its own size
    dataset: str = ""  # DATASET_EXAMPLES: a dataset name
    top_k: int = 9  # DATASET_EXAMPLES: examples per unit
    image: int = -1  # CARICATURE: the index of the dataset's image (in its sorted file order)
    upload: str = ""  # CARICATURE: instead, the sha256 of an image an editor uploaded (kb.render.uploads)

    def check(self, kind: str) -> RenderParams:
        if kind not in ALL_KINDS:
            raise BadParams(f"kind must be one of {', '.join(ALL_KINDS)}")
        if not 16 <= self.size <= 512:
            raise BadParams("size must be 16..512 pixels")
        if not 1 <= self.steps <= 4096:
            raise BadParams("steps must be 1..4096")
        if not 0 <= self.seed < 2**31:
            raise BadParams("seed must be 0..2^31-1")
        if self.parameterization not in PARAMETERIZATIONS:
            raise BadParams(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}")
        if self.transforms not in TRANSFORMS:
            raise BadParams(f"transforms must be one of {', '.join(TRANSFORMS)}")
        if not 0 < self.lr <= 1:
            raise BadParams("lr must be in (0, 1]")
        if self.upsample and not 16 <= self.upsample <= 512:
            raise BadParams("upsample must be 0 or 16..512 pixels")
        if kind == "DATASET_EXAMPLES" and not self.dataset:
            raise BadParams("DATASET_EXAMPLES needs a dataset name (kb dataset add NAME PATH)")
        if not 1 <= self.top_k <= 64:
            raise BadParams("top_k must be 1..64")
        if self.upload and not SHA256.fullmatch(self.upload):
            raise BadParams("upload must be an uploaded image's sha256 (64 hex digits, as the upload answered)")
        if kind == "CARICATURE" and self.upload and (self.dataset or self.image >= 0):
            raise BadParams("CARICATURE takes either an uploaded image (upload) or a dataset's (dataset, image)")
        if kind == "CARICATURE" and not self.upload and (not self.dataset or self.image < 0):
            raise BadParams(
                "CARICATURE needs a dataset name and an image index in it (dataset, image), or an uploaded image "
                "(upload: its sha256)"
            )
        if self.image >= 2**31:
            raise BadParams("image must be 0..2^31-1")
        return self

    def within(self, kind: str, settings: Settings) -> RenderParams:
        """The operator's ceilings (``KB_RENDER_MAX_SIZE``, ``_STEPS``, ``_UPSAMPLE``) on the parameters that
        matter to this kind: one above its ceiling is refused with LIMIT_EXCEEDED, naming the ceiling."""
        relevant = self.relevant(kind)
        for name, setting in CEILINGS.items():
            ceiling = getattr(settings, setting)
            if name in relevant and relevant[name] > ceiling:
                raise AboveCeiling(
                    f"{name} {relevant[name]} is above this knowledge base's ceiling: KB_{setting.upper()}={ceiling}",
                    ceiling=f"KB_{setting.upper()}",
                )
        return self

    def relevant(self, kind: str) -> dict[str, Any]:
        """Only the parameters that change the image of this kind (so irrelevant ones don't split the cache)."""
        d = asdict(self)
        upload = d.pop("upload")  # only an uploaded image's caricature has it (the others' hashes stay as they were)
        if kind in ("FEATURE_VIS", "NEURON_VIS"):
            d.pop("dataset"), d.pop("top_k"), d.pop("image")
        elif kind == "DATASET_EXAMPLES":
            d = {"dataset": self.dataset, "top_k": self.top_k}
        elif kind == "DEEPDREAM":
            d.pop("dataset"), d.pop("top_k"), d.pop("image"), d.pop("negative")
        elif kind == "CARICATURE":
            d.pop("top_k"), d.pop("negative")
            if upload:  # the image's sha256 is part of the job's key (params_hash)
                d.pop("dataset"), d.pop("image")
                d["upload"] = upload
        else:
            d = {}
        return d


def params_hash(kind: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, **params}, sort_keys=True).encode()).hexdigest()
