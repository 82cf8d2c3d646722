"""Registry of architectures by source (``lucent:inceptionv1``, ``torchvision:googlenet``)."""

from __future__ import annotations

from kb.graph.zoo import demo_zoo, lucent_zoo, torchvision_zoo
from kb.graph.zoo.spec import Architecture, Branches, Conv, LayerSpec, M, Pool, Same

_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add an architecture (tests register tiny hand-built ones; plugins may add more)."""
    _REGISTRY[arch.source] = arch
    return arch


for _a in (
    *lucent_zoo.ARCHITECTURES.values(),
    *torchvision_zoo.ARCHITECTURES.values(),
    *demo_zoo.ARCHITECTURES.values(),
):
    register(_a)


class UnknownArchitecture(LookupError):
    pass


def get(source: str) -> Architecture:
    if source in _REGISTRY:
        return _REGISTRY[source]
    known = ", ".join(sorted(_REGISTRY))
    if ":" not in source:
        matches = [s for s in _REGISTRY if s.split(":", 1)[1] == source]
        if len(matches) == 1:
            return _REGISTRY[matches[0]]
    raise UnknownArchitecture(f"unknown architecture {source!r} (known: {known})")


def sources() -> list[str]:
    return sorted(_REGISTRY)


__all__ = [
    "Architecture",
    "Branches",
    "Conv",
    "LayerSpec",
    "M",
    "Pool",
    "Same",
    "UnknownArchitecture",
    "get",
    "register",
    "sources",
]
