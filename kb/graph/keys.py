"""The citation contract: neuron keys, the forms researchers write them in, and the one resolver.

Canonical   inceptionv1/mixed4c:447
Pinned      inceptionv1@0123456789ab/mixed4c:447   (first 12 hex of the weights' sha256; a mismatch is an error)
Accepted    InceptionV1 4c:447          the papers' form (model case-insensitive, declared layer aliases)
            mixed4c:447                 inside a known model (``default_model``)
            models/inceptionv1/mixed4c_0/447, https://microscope.openai.com/models/...   Microscope
            googlenet/inception4c:447, resnet50/layer3.5:12, resnet50/layer3_5:12   module paths, lucent names
            n/inceptionv1/mixed4c/447, <public url>/n/...   this knowledge base's own page URLs

Pure Python: no torch, no database. The catalog of models and layers is passed in.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from kb.errors import Problem

MODEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_INDEX = r"(?P<index>[0-9]{1,18})"  # ASCII digits (\d also takes other scripts), bounded
_URL_PREFIX = re.compile(r"^[a-z][a-z0-9+.-]*://[^/]+", re.I)
_MICROSCOPE = re.compile(r"^/?models/(?P<model>[^/\s]+)/(?P<layer>[^/\s]+)/" + _INDEX + r"/?$")
_PAGE = re.compile(r"^/?n/(?P<model>[^/\s@]+)(?:@(?P<hash>[0-9a-fA-F]+))?/(?P<layer>[^/\s]+)/" + _INDEX + r"/?$")
_PINNED = re.compile(r"^(?P<model>[^/\s@:]+)@(?P<hash>[0-9a-fA-F]+)/(?P<layer>[^:\s]+):" + _INDEX + "$")
_SLASHED = re.compile(r"^(?P<model>[^/\s@:]+)/(?P<layer>[^:\s]+):" + _INDEX + "$")
_PAPER = re.compile(r"^(?P<model>[^/\s@:]+)\s+(?P<layer>[^:\s]+):" + _INDEX + "$")
_BARE = re.compile(r"^(?P<layer>[^:/\s@]+):" + _INDEX + "$")
_LAYER_SLASHED = re.compile(r"^(?P<model>[^/\s@:]+)(?:@(?P<hash>[0-9a-fA-F]+))?/(?P<layer>[^:\s]+)$")
_LAYER_PAPER = re.compile(r"^(?P<model>[^/\s@:]+)\s+(?P<layer>[^:\s]+)$")


class KeyProblem(Problem, LookupError):
    """Base of the resolver's errors; a suggestion, when there is one, travels as an extension."""

    code = "BAD_KEY"

    def __init__(self, message: str, suggestion: str | None = None):
        super().__init__(message, suggestion=suggestion)
        self.suggestion = suggestion

    def __str__(self) -> str:
        return self.message + (f" (did you mean {self.suggestion}?)" if self.suggestion else "")


class BadKey(KeyProblem):
    code = "BAD_KEY"


class NotFound(KeyProblem):
    code = "NOT_FOUND"


class Removed(KeyProblem):
    code = "NOT_FOUND"


@dataclass(frozen=True)
class LayerRef:
    key: str
    module_path: str
    units: int
    aliases: tuple[str, ...] = ()

    def names(self) -> set[str]:
        out = {self.key, self.module_path, self.module_path.replace(".", "_"), *self.aliases}
        return {n.lower() for n in out if n}


@dataclass(frozen=True)
class ModelRef:
    key: str
    sha256: str
    layers: tuple[LayerRef, ...]
    removed: bool = False
    _index: dict[str, LayerRef] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for layer in self.layers:
            for name in layer.names():
                self._index.setdefault(name, layer)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def layer(self, name: str) -> LayerRef | None:
        n = name.lower()
        found = self._index.get(n)
        if found is None and re.search(r"_\d+$", n):  # Microscope / Lucid tensor names: mixed4c_0
            found = self._index.get(re.sub(r"_\d+$", "", n))
        return found


@dataclass(frozen=True)
class NeuronKey:
    model: str
    layer: str
    index: int

    def __str__(self) -> str:
        return f"{self.model}/{self.layer}:{self.index}"

    def pinned(self, sha256: str) -> str:
        return f"{self.model}@{sha256[:12]}/{self.layer}:{self.index}"

    def path(self) -> str:
        """The stable page path of the neuron: /n/{model}/{layer}/{index}."""
        return f"/n/{self.model}/{self.layer}/{self.index}"


@dataclass(frozen=True)
class LayerKey:
    model: str
    layer: str

    def __str__(self) -> str:
        return f"{self.model}/{self.layer}"


class Catalog:
    """The models a resolver knows, by key (lowercase)."""

    def __init__(self, models: list[ModelRef]):
        self.models = {m.key.lower(): m for m in models}

    def model(self, name: str, hash_prefix: str | None = None) -> ModelRef:
        m = self.models.get(name.lower())
        if m is None:
            close = difflib.get_close_matches(name.lower(), list(self.models), n=1, cutoff=0.6)
            raise NotFound(f"no model {name!r}", close[0] if close else None)
        if m.removed:
            raise Removed(f"model {m.key!r} was removed; its keys are kept as a tombstone and resolve to nothing")
        if hash_prefix is not None:
            if len(hash_prefix) < 6:
                raise BadKey(f"pinned key hash {hash_prefix!r} is too short (12 hex digits expected)")
            if not m.sha256.lower().startswith(hash_prefix.lower()):
                raise BadKey(
                    f"pinned key names weights {hash_prefix} but {m.key} holds weights {m.short_hash}: "
                    f"this is not the model version the key was pinned to"
                )
        return m

    def _layer(self, m: ModelRef, name: str) -> LayerRef:
        found = m.layer(name)
        if found is None:
            names = sorted({n for layer in m.layers for n in layer.names()})
            close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
            near = m.layer(close[0]) if close else None  # a name of the model's: always found
            suggestion = f"{m.key}/{near.key}" if near else None
            raise NotFound(f"model {m.key} has no layer {name!r}", suggestion)
        return found

    def neuron(self, text: str, default_model: str | None = None) -> NeuronKey:
        """Any accepted form to the canonical key; raises BadKey, NotFound (with a suggestion) or Removed."""
        raw = (text or "").strip()
        if not raw:
            raise BadKey("empty neuron key")
        if len(raw) > 512:
            raise BadKey("neuron key longer than 512 characters")
        s = _URL_PREFIX.sub("", raw)
        s = s.split("?", 1)[0].split("#", 1)[0] if s != raw else s
        hash_prefix = None
        for pattern in (_MICROSCOPE, _PAGE, _PINNED, _SLASHED, _PAPER):
            match = pattern.match(s)
            if match:
                model_name, layer_name = match["model"], match["layer"]
                hash_prefix = match.groupdict().get("hash")
                break
        else:
            match = _BARE.match(s)
            if not match:
                raise BadKey(
                    f"cannot read {raw!r} as a neuron key; expected e.g. inceptionv1/mixed4c:447, "
                    f"'InceptionV1 4c:447' or models/inceptionv1/mixed4c_0/447"
                )
            if not default_model:
                raise BadKey(f"{raw!r} names no model: write it as MODEL/{match['layer']}:{match['index']}")
            model_name, layer_name = default_model, match["layer"]
        m = self.model(model_name, hash_prefix)
        layer = self._layer(m, layer_name)
        index = int(match["index"])
        if index >= layer.units:
            raise NotFound(
                f"{m.key}/{layer.key} has {layer.units} units (0..{layer.units - 1}); there is no unit {index}",
                f"{m.key}/{layer.key}:{layer.units - 1}",
            )
        return NeuronKey(m.key, layer.key, index)

    def layer(self, text: str, default_model: str | None = None) -> LayerKey:
        raw = (text or "").strip()
        if not raw:
            raise BadKey("empty layer key")
        match = _LAYER_SLASHED.match(raw) or _LAYER_PAPER.match(raw)
        if match:
            m = self.model(match["model"], match.groupdict().get("hash"))
            layer_name = match["layer"]
        elif default_model and re.match(r"^[^:/\s@]+$", raw):
            m, layer_name = self.model(default_model), raw
        else:
            raise BadKey(f"cannot read {raw!r} as a layer key; expected e.g. inceptionv1/mixed4c")
        return LayerKey(m.key, self._layer(m, layer_name).key)
