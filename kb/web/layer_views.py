"""The layer page's "Layer views" section: the layer's deep dream and caricatures when rendered, else how to ask
for them (the API mutation and the CLI line). Its own query, so the section is one part of the page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from kb.web.templating import local

LAYER_VIEWS = """query($k: String!) { layer(key: $k) { key
  views { kind params dataset image upload source { url width height } artifact { url width height } } } }"""


def _largest(views: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The largest picture (the last asked for, among equals)."""
    best = None
    for v in views:
        if best is None or v["size"] >= best["size"]:
            best = v
    return best


def section(layer_key: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """The template's values: ``deepdream`` (one picture or None), ``caricatures`` (one per target image: a
    dataset's, or an uploaded one with its ``source_src``), and the lines that ask for either."""
    views = []
    for v in ((data or {}).get("layer") or {}).get("views") or []:
        p = json.loads(v["params"])
        views.append({**v, "size": p.get("size", 0), "steps": p.get("steps"), "src": local(v["artifact"]["url"])})
    caricatures: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for v in views:
        if v["kind"] == "CARICATURE":
            if v.get("source"):  # an uploaded image's: shown beside its source
                v["source_src"] = local(v["source"]["url"])
            target = ("", -1, v["upload"]) if v.get("upload") else (v["dataset"] or "", v["image"], "")
            caricatures.setdefault(target, []).append(v)
    deepdream = f'mutation {{ requestLayerRender(kind: DEEPDREAM, layer: "{layer_key}") {{ id status }} }}'
    caricature = (
        f'mutation {{ requestLayerRender(kind: CARICATURE, layer: "{layer_key}", '
        f'params: {{ dataset: "DATASET", image: 0 }}) {{ id status }} }}'
    )
    return {
        "deepdream": _largest([v for v in views if v["kind"] == "DEEPDREAM"]),
        "caricatures": [_largest(found) for _, found in sorted(caricatures.items())],
        "deepdream_mutation": deepdream,
        "deepdream_link": "/graphql?query=" + quote(deepdream),
        "deepdream_cli": f"kb render --layer {layer_key} --kind deepdream --wait",
        "caricature_mutation": caricature,
        "caricature_cli": f"kb render --layer {layer_key} --kind caricature --dataset DATASET --image 0 --wait",
        "upload_cli": f"kb render --layer {layer_key} --kind caricature --image-file PICTURE.png --wait",
    }
