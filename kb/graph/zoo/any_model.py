"""Architectures resolved on demand from a source that is not declared in the zoo:

``torchvision:NAME``             every torchvision classification model (``torchvision.models.list_models``)
``timm:NAME``                    every timm model (``timm.list_models()``), built with ``pretrained=False``
``module:package.module:factory``  a researcher's own code: ``factory()`` returns the ``torch.nn.Module``

Their trunk is empty: the path between significant layers is traced (``kb.graph.traced``). The significant layers
are chosen by ``kb.graph.layer_choice`` (the default rule, or ``--layers``), named by their module paths; the
input shape comes from the model (timm's ``pretrained_cfg``, torchvision's weights' crop size, the first
convolution's input channels) or from ``--input-shape``. Importing this module does not import torch.
"""

from __future__ import annotations

import difflib
import importlib
import re
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kb.graph.zoo.spec import Architecture, StateDict

if TYPE_CHECKING:
    import torch

PREFIXES = ("torchvision:", "timm:", "module:")
_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class SourceProblem(LookupError):
    pass


def handles(source: str) -> bool:
    return source.startswith(PREFIXES)


def default_key(source: str) -> str:
    """A model key from the source's last name: ``timm:resnet18.a1_in1k`` -> ``resnet18-a1_in1k``."""
    name = source.rsplit(":", 1)[1].lower()
    key = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-_")
    return key[:64] or "model"


# -- building -----------------------------------------------------------------------------------------------


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_torchvision(name: str) -> torch.nn.Module:
    import torchvision

    model: torch.nn.Module = torchvision.models.get_model(name, weights=None)
    return model


def _build_timm(name: str) -> torch.nn.Module:
    import timm

    model: torch.nn.Module = timm.create_model(name, pretrained=False)
    return model


def _factory(spec: str) -> Callable[[], object]:
    """``package.module:factory`` as a callable; the current folder is searched too (a researcher's own code)."""
    module_name, attr = spec.rsplit(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name) or str(Path.cwd()) in sys.path:
            raise SourceProblem(f"module:{spec}: cannot import {module_name} ({exc})") from None
        sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            raise SourceProblem(f"module:{spec}: cannot import {module_name} ({again})") from None
    except Exception as exc:  # the researcher's module failed while importing: say how, in one line
        raise SourceProblem(f"module:{spec}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SourceProblem(f"module:{spec}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def _build_module(spec: str) -> torch.nn.Module:
    import torch

    model = _factory(spec)()
    if not isinstance(model, torch.nn.Module):
        raise SourceProblem(f"module:{spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# -- published weights -----------------------------------------------------------------------------------------


def _timm_pretrained(name: str, weights: str) -> tuple[str, StateDict]:
    """timm's own pretrained weights (``--weights hub``; ``hub:TAG`` for one of the model's tags): downloaded
    from the hub as ``timm.create_model(..., pretrained=True)`` loads them, so it needs the internet once."""
    import timm

    if weights == "DEFAULT":  # no --weights: timm's default pretrained weights, as for torchvision's
        weights = "hub"
    if weights != "hub" and not weights.startswith("hub:"):
        raise ValueError(
            f"timm:{name} takes --weights hub (timm's pretrained weights, downloaded once), a checkpoint path, "
            f"or random"
        )
    model_name = weights.split(":", 1)[1] if ":" in weights else name
    try:
        model = timm.create_model(model_name, pretrained=True)
    except Exception as exc:  # offline: huggingface_hub's errors are many types; one line either way
        raise ValueError(
            f"cannot fetch timm's weights for {model_name} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            f"offline, pass --weights PATH (a checkpoint) or --weights random"
        ) from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    tag = cfg.get("architecture", name) + (f".{cfg['tag']}" if cfg.get("tag") else "")
    return f"hub:{tag}", model.state_dict()


def _torchvision_pretrained(name: str, weights: str) -> tuple[str, StateDict]:
    from kb.graph.zoo.torchvision_zoo import _pretrained

    return _pretrained(name, weights)


# -- input shape -----------------------------------------------------------------------------------------------


def _first_in_channels(model: torch.nn.Module) -> int | None:
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return int(m.in_channels)
        if isinstance(m, torch.nn.Linear):
            return None
    return None


def _model_input_shape(kind: str, name: str, model: torch.nn.Module) -> tuple[int, int, int]:
    channels = _first_in_channels(model) or 3
    size: int | None = None
    if kind == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        if len(cfg.get("input_size", ())) == 3:
            _c, h, w = (int(v) for v in cfg["input_size"])
            return (channels, h, w)
    if kind == "torchvision":
        import torchvision

        try:
            transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms
            crop = transforms.keywords.get("crop_size") if hasattr(transforms, "keywords") else None
            size = int(crop[0] if isinstance(crop, (list, tuple)) else crop) if crop else None
        except (ValueError, KeyError, AttributeError, TypeError):
            size = None
    side = size or 224
    return (channels, side, side)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``4,64,64`` (channels, height, width)."""
    try:
        parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 < p <= 8192 for p in parts):
        raise SourceProblem(f"--input-shape {text!r}: expected CHANNELS,HEIGHT,WIDTH, e.g. 3,224,224")
    return parts[0], parts[1], parts[2]


# -- the architecture ---------------------------------------------------------------------------------------------


def architecture(
    source: str, layers: str | None = None, input_shape: tuple[int, int, int] | None = None
) -> Architecture:
    """The Architecture of ``source`` with its significant layers chosen (builds the model once to read it)."""
    import torch

    from kb.graph.layer_choice import LayerChoiceProblem, choose

    kind, name = source.split(":", 1)
    pretrained = None
    if kind == "torchvision":
        names = _torchvision_names()
        if name not in names:
            raise SourceProblem(_unknown(source, name, names, "torchvision classification model"))
        build = partial(_build_torchvision, name)
        pretrained = partial(_torchvision_pretrained, name)
    elif kind == "timm":
        try:
            import timm
        except ImportError:
            raise SourceProblem(f"{source}: timm is not installed (pip install timm)") from None
        if not timm.is_model(name):
            raise SourceProblem(_unknown(source, name, timm.list_models(), "timm model"))
        build = partial(_build_timm, name)
        pretrained = partial(_timm_pretrained, name)
    elif kind == "module":
        if not _FACTORY.match(name):
            raise SourceProblem(f"{source}: expected module:package.module:factory (a function returning the model)")
        _factory(name)  # fails early, in one line
        build = partial(_build_module, name)
    else:  # pragma: no cover - handles() guards
        raise SourceProblem(f"unknown source kind {kind!r}")

    torch.manual_seed(0)
    try:
        model = build()
    except SourceProblem:
        raise
    except Exception as exc:
        raise SourceProblem(f"{source}: building the model failed: {type(exc).__name__}: {exc}") from None
    shape = input_shape or _model_input_shape(kind, name, model)
    try:
        specs = choose(model, shape, layers, source)
    except LayerChoiceProblem as exc:
        raise SourceProblem(str(exc)) from None
    except RuntimeError as exc:  # the forward pass refused the input
        first = str(exc).splitlines()[0][:200]
        raise SourceProblem(f"{source}: a forward pass on input {shape} failed ({first}); set --input-shape") from None
    return Architecture(
        name=default_key(source),
        source=source,
        input_shape=shape,
        layers=specs,
        trunk=(),  # traced (kb.graph.traced)
        build=build,
        pretrained=pretrained,
        description=f"{source}, layers chosen by {'--layers ' + layers if layers else 'the default rule'}",
        layers_by_path=True,
    )


def _unknown(source: str, name: str, names: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    return f"unknown {what} {source!r}" + (f"; nearest: {', '.join(close)}" if close else "")
