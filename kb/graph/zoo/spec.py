"""The model zoo as data: which layers of an architecture are significant, and the path between them.

Like Lucid's model zoo, nothing here is guessed at run time: every significant layer is declared with its
name (the key researchers cite), the module whose output holds its units, tags and aliases; the trunk says
in which order the modules between significant layers run. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing the zoo does not import torch
    import torch

Pair = tuple[int, int]


@dataclass(frozen=True)
class LayerSpec:
    name: str  # the citable layer key, e.g. "mixed4c"
    module: str  # module path whose output holds the units, e.g. "mixed4c", "layer3.5"
    kind: str  # conv | inception | bottleneck | linear
    tags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # other names researchers use: "4c", "inception4c", the conv before a ReLU


# -- trunk steps -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class M:
    """A module converted by its type (conv, BatchNorm, pool, linear, Inception block, ResNet block...)."""

    path: str


@dataclass(frozen=True)
class Conv:
    """A conv whose padding is applied outside the module (lucent's InceptionV1 pads with F.pad)."""

    path: str
    pad: Pair = (0, 0)


@dataclass(frozen=True)
class Pool:
    """A functional pooling window; max-pooling is linearised as its average (see kb.graph.linear)."""

    size: int
    stride: int
    pad: Pair = (0, 0)
    path: str = ""
    op: str = "max"


@dataclass(frozen=True)
class Same:
    """An op taken as the identity in the linear path: a ReLU layer, local response normalisation."""

    path: str
    note: str = ""


@dataclass(frozen=True)
class Branches:
    """Parallel branches whose outputs are concatenated along channels (an Inception block)."""

    path: str
    branches: tuple[tuple[Step, ...], ...]


Step = M | Conv | Pool | Same | Branches
# A block type's branches at a module path: how the walker reads a block it has no rule for by its type alone.
BlockBranches = Callable[[str], tuple[tuple[Step, ...], ...]]
StateDict = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class Architecture:
    name: str  # default model key, e.g. "inceptionv1"
    source: str  # e.g. "lucent:inceptionv1"
    input_shape: tuple[int, int, int]
    layers: tuple[LayerSpec, ...]
    trunk: tuple[Step, ...]
    build: Callable[[], torch.nn.Module]  # returns a model with freshly initialised (random) weights
    # weights name -> (the name of the weights it loaded, e.g. DEFAULT resolved; their state dict); may download
    pretrained: Callable[[str], tuple[str, StateDict]] | None = None
    # weights trained here by a recipe, from a seed: seed -> (the provenance recorded, their state dict). When set,
    # they are the architecture's default weights (`kb import demo:digits --seed N`); the provenance names the seed
    train: Callable[[int], tuple[str, StateDict]] | None = None
    # the images the trained weights learnt from: (data set name, a function that writes them under a folder and
    # returns the folder); `kb import` registers them as a data set for dataset examples
    dataset: tuple[str, Callable[[Path], Path]] | None = None
    ignore_keys: tuple[str, ...] = ()  # checkpoint key prefixes that are not part of this architecture
    description: str = ""
    blocks: Mapping[str, BlockBranches] = field(default_factory=dict)  # module type name -> its branches
    # layers are named by their module paths (any_model's sources): a layer chosen with --layers at import is
    # found by its path even where this architecture's default choice does not hold it (render workers)
    layers_by_path: bool = False

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        if self.layers_by_path:
            return LayerSpec(name, name, "block")
        raise KeyError(name)
