"""Registry of architectures by source (``lucent:inceptionv1``, ``torchvision:googlenet``)."""

from __future__ import annotations

from kb.graph.zoo import any_model, demo_zoo, lucent_zoo, torchvision_zoo
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


def get(source: str, layers: str | None = None, input_shape: tuple[int, int, int] | None = None) -> Architecture:
    """The architecture of ``source``: a declared one (the zoo's seven keep precedence for their sources), else
    one resolved on demand (``torchvision:NAME``, ``timm:NAME``, ``module:package.module:factory``; builds the
    model once to choose its layers: ``layers`` as --layers takes them, ``input_shape`` overriding the model's)."""
    declared = _REGISTRY.get(source)
    if declared is None and ":" not in source:
        matches = [s for s in _REGISTRY if s.split(":", 1)[1] == source]
        declared = _REGISTRY[matches[0]] if len(matches) == 1 else None
    if declared is not None:
        if layers is not None or input_shape is not None:
            raise UnknownArchitecture(
                f"{declared.source} is declared in the zoo with its own layers and input; "
                f"--layers and --input-shape apply to other torchvision:, timm: and module: models"
            )
        return declared
    if any_model.handles(source):
        try:
            return any_model.architecture(source, layers, input_shape)
        except any_model.SourceProblem as exc:
            raise UnknownArchitecture(str(exc)) from None
    known = ", ".join(sorted(_REGISTRY))
    raise UnknownArchitecture(
        f"unknown architecture {source!r} (declared: {known}; or torchvision:NAME, timm:NAME, "
        f"module:package.module:factory)"
    )


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
