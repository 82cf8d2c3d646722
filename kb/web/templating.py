"""The pages' Jinja2 environment (Starlette's Jinja2Templates, autoescape on) and the helpers templates call.

Static files get a content hash in their URL (``/static/kb.css?v=1a2b3c4d``) so they can be cached for a year.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from os import PathLike, stat_result
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from kb.claims.claims import may_set_status
from kb.claims.content import artifact_sha
from kb.experiments.figures import fmt as figure_text
from kb.graph.keys import NeuronKey
from kb.render.thumbnails import Picture
from kb.web import markdown, pictures
from kb.web.auth.current import signed_in

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"


class Static(StaticFiles):
    """static/ with cache headers: a year for the hashed URLs the pages use, five minutes otherwise."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        hashed = b"v=" in scope.get("query_string", b"")
        response.headers["cache-control"] = "public, max-age=31536000, immutable" if hashed else "public, max-age=300"
        return response


@lru_cache(maxsize=256)
def static(name: str) -> str:
    path = STATIC / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.is_file() else "0"
    return f"/static/{name}?v={digest}"


def neuron_path(key: str) -> str:
    """inceptionv1/mixed4c:447 → /n/inceptionv1/mixed4c/447 (canonical keys)."""
    head, _, index = key.rpartition(":")
    model, _, layer = head.partition("/")
    return NeuronKey(model, layer, int(index)).path()


def claim_path(key: str, revision: int | None = None) -> str:
    number = key.split(":", 1)[1].split("@", 1)[0]
    return f"/c/{number}" + (f"/{revision}" if revision else "")


def circuit_path(key: str) -> str:
    """circuit:3 → /circuits/3; circuit:3@2 (a revision) → /circuits/3/2."""
    return "/circuits/" + key.split(":", 1)[1].replace("@", "/", 1)


def local(url: str) -> str:
    """An artifact URL as a path on this server (pages work under any host name)."""
    i = url.find("/artifacts/")
    return url[i:] if i >= 0 else url


def evidence_picture(visualization: str | None) -> str | None:
    """An evidence visualization's path on this server (/artifacts/SHA.png), or None for text that names no
    artifact (old revisions may hold a URL: it never becomes an image source)."""
    sha = artifact_sha(visualization)
    return f"/artifacts/{sha}.png" if sha else None


@jinja2.pass_context
def card_picture(ctx: jinja2.runtime.Context, node: Any) -> Picture | None:
    """A unit card's picture (kb.web.thumbnails): the thumbnail preset's render, a marked fallback, or None. Needs
    the page's ``request`` (macros that call it are imported ``with context``)."""
    request = ctx.get("request")
    pictures = getattr(request.app.state, "pictures", None) if request is not None else None
    return pictures.of(node) if pictures is not None else None


def read(data: Any, name: str, default: Any = None) -> Any:
    """A field of a page's data, whichever shape it has: a key of a GraphQL answer's dict, or an attribute of a
    kb.app use case's dataclass (the neuron page's). Jinja's ``a.b`` reads both; Python helpers read through this."""
    if isinstance(data, Mapping):
        return data.get(name, default)
    return getattr(data, name, default)


def labels(node: Any) -> list[Any]:
    """The unit's current claims worth a chip (not retracted or rejected)."""
    return [c for c in read(node, "claims") or () if read(c, "status") not in ("RETRACTED", "REJECTED")]


PUBLISHERS = {"lucent": "Lucid's", "torchvision": "torchvision's"}


def weights_origin(model: dict[str, Any]) -> str:
    """Where a model's weights come from, in words (its ``weights`` as the importer recorded them)."""
    weights = model["weights"]
    if weights.startswith("random"):
        return f"seeded random weights ({weights}): not trained, for testing"
    if weights.startswith("checkpoint "):
        return f"weights from a checkpoint ({weights.removeprefix('checkpoint ')})"
    publisher = PUBLISHERS.get(model["source"].partition(":")[0], "published")
    return f"{publisher} trained weights {weights}"


def published_weights(model: dict[str, Any]) -> bool:
    """The weights its source publishes (what the architecture's description speaks of): not random, no checkpoint."""
    return not model["weights"].startswith(("random", "checkpoint "))


FAMILY_ON_RANDOM = (
    "a family found in the trained InceptionV1 (the Circuits thread); this model has random weights, "
    "whose units do not show it"
)


def random_weights(model: Any) -> bool:
    """Whether a page's model (a GraphQL answer's, or kb.app.neuron_page's ModelSummary) has random weights; False
    for anything else a page calls its model (the feed page's model filter is its key, a string)."""
    if not model:  # none, or undefined on the page
        return False
    if isinstance(model, Mapping):
        return bool(model.get("weightsAreRandom"))
    return bool(getattr(model, "weights_are_random", False))


def untrained_family(claim: Any, model: Any) -> bool:
    """A family claim (made on the trained InceptionV1) shown on a model with random weights."""
    return read(claim, "kind") == "FAMILY" and random_weights(model)


def chip_title(claim: Any, model: Any) -> str:
    """A claim chip's title: its label, and for a family on random weights, the warning."""
    label: str = read(claim, "label")
    if untrained_family(claim, model):
        return f"{label} — {FAMILY_ON_RANDOM}"
    return label


def short(key: str) -> str:
    """inceptionv1/mixed4c:447 → mixed4c:447"""
    return key.split("/", 1)[-1]


def key_html(key: str) -> Markup:
    """A key shown in a narrow card: it may break after ``/``, ``:`` or ``.`` (a <wbr>), never inside a name or a
    number (the CSS keeps the rest unbroken)."""
    return Markup("<wbr>".join(escape(part) for part in re.split(r"(?<=[/:.])", key)))


def noun(count: int, word: str, words: str | None = None) -> str:
    """The noun alone, as the count wants it (a label beside its number): ``claim`` for 1, ``claims`` else."""
    return word if count == 1 else words or word + "s"


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 unit``, ``2 units``, ``1,024 units``; ``words``: an irregular plural."""
    return f"{count:,} {noun(count, word, words)}"


def _signed(value: float, digits: int) -> str:
    if value == 0:
        return "0"
    size = math.floor(math.log10(abs(value)))
    if size < -3 or size >= 4:  # very small or large: scientific, with the same significant digits
        return f"{value:+.{digits - 1}e}"
    return f"{value:+.{max(0, digits - 1 - size)}f}"


def weight_texts(values: Iterable[float], digits: int = 3, most: int = 6) -> list[str]:
    """Weights as signed text with ``digits`` significant digits, or more (up to ``most``) until the values that
    differ are told apart: ten inputs of about 0.003 read ``+0.00312``, ``+0.00307``..., never ten ``+0.003``."""
    values = list(values)
    distinct = len(set(values))
    for d in range(digits, most + 1):
        texts = [_signed(v, d) for v in values]
        if len(set(texts)) == distinct:
            return texts
    return texts


def weight_text(value: float) -> str:
    return weight_texts([value])[0]


def params_text(params: str) -> str:
    p = json.loads(params)
    keep = ("size", "steps", "seed", "dataset", "topK")
    return ", ".join(f"{k} {p[k]}" for k in keep if p.get(k) not in (None, "", False))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.update(
        static=static,
        neuron_path=neuron_path,
        claim_path=claim_path,
        circuit_path=circuit_path,
        card_picture=card_picture,
        labels=labels,
        chip_title=chip_title,
        weights_origin=weights_origin,
        published_weights=published_weights,
        untrained_family=untrained_family,
        random_weights=random_weights,
        short=short,
        fmt=figure_text,
        local=local,
        evidence_picture=evidence_picture,
        params_text=params_text,
        key_html=key_html,
        plural=plural,
        noun=noun,
        weight_text=weight_text,
        kernel_svg=pictures.kernel_svg,
        kernel_scale=pictures.kernel_scale,
        weight_bar=pictures.weight_bar,
        family_slug=markdown.family_slug,
        signed_in=signed_in,
        may_set_status=may_set_status,
    )
    return env


@lru_cache(maxsize=1)
def templates() -> Jinja2Templates:
    return Jinja2Templates(env=_environment())
