"""The demo model organism: a small CNN trained here on scikit-learn's digits, deterministically from a seed.

``trained(seed)`` gives the trained network, the images and labels (the public entry point; ``kb import
demo:digits`` imports the same weights). Training runs on the CPU in one thread with deterministic algorithms,
so one seed gives one set of weights (one sha256). With a cache folder, the trained state dict is kept there under
the recipe's hash and the seed, and read back instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kb.graph.zoo import digits_data

RECIPE_NAME = "digits-v1"


class DigitsNet(nn.Module):
    """conv1 → conv2 → conv3 (3x3, ReLU; 2x2 max-pool after conv1 and conv2) → average to 4x4 → logits.

    The adaptive average keeps the network whole at any image size (renders at 64 px, say)."""

    def __init__(self, widths: tuple[int, int, int] = (8, 16, 32), pooled: int = 4, classes: int = 10):
        super().__init__()
        a, b, c = widths
        self.conv1 = nn.Conv2d(3, a, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(a, b, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(b, c, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c * pooled * pooled, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.conv3(x))
        logits: torch.Tensor = self.fc(self.flatten(self.avgpool(x)))
        return logits


@dataclass(frozen=True)
class Recipe:
    """Everything the weights depend on besides the seed (its hash names the cached weights)."""

    name: str = RECIPE_NAME
    widths: tuple[int, int, int] = (8, 16, 32)
    pooled: int = 4
    size: int = digits_data.SIZE
    held_out: int = digits_data.HELD_OUT
    split_seed: int = digits_data.SPLIT_SEED
    epochs: int = 10
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0

    def describe(self) -> str:
        a, b, c = self.widths
        return (
            f"conv3x3 {a}-{b}-{c} ReLU, 2x2 max-pool after conv1 and conv2, average to {self.pooled}x{self.pooled}, "
            f"fc 10; "
            f"Adam lr={self.lr:g} batch={self.batch} epochs={self.epochs}; sklearn digits 8x8 bilinear to "
            f"{self.size}x{self.size}, grey in 3 channels, [0,1]; split {1797 - self.held_out}/{self.held_out} "
            f"(permutation seed {self.split_seed}); CPU, 1 thread, deterministic"
        )

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


RECIPE = Recipe()


@dataclass
class Trained:
    model: DigitsNet  # eval mode
    images: torch.Tensor  # N x 3 x 32 x 32 in [0, 1] (grey in three channels): every image, the files' order
    labels: torch.Tensor  # N
    held_out: torch.Tensor  # indices of the held-out images
    accuracy: float  # on the held-out images
    seconds: float  # training time (of the run that made the weights, when read from the cache)
    seed: int
    recipe: Recipe = RECIPE

    def described(self) -> str:
        """The provenance recorded as the model's weights (``Model.weights``); ``kb.graph.weights.reload`` reads
        the seed back from it."""
        right = round(self.accuracy * len(self.held_out))
        return (
            f"trained {self.recipe.name} seed={self.seed} held-out accuracy={self.accuracy:.4f} "
            f"({right}/{len(self.held_out)}) in {self.seconds:.1f}s, torch={torch.__version__.split('+')[0]}: "
            f"{self.recipe.describe()}"
        )


def build(recipe: Recipe = RECIPE) -> DigitsNet:
    """A freshly initialised network (the architecture's ``build``: random weights from torch's global seed)."""
    return DigitsNet(recipe.widths, recipe.pooled)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train(seed: int, recipe: Recipe = RECIPE) -> Trained:
    """Trains the recipe from ``seed``: the same seed gives the same weights, bit for bit, on a given CPU."""
    images, labels = digits_data.tensors()
    train_idx, held = digits_data.split(len(labels))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    t0 = time.perf_counter()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(seed)
        model = build(recipe)
        order = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        x, y = images[train_idx], labels[train_idx]
        model.train()
        for _ in range(recipe.epochs):
            perm = torch.randperm(len(y), generator=order)
            for lo in range(0, len(y), recipe.batch):
                b = perm[lo : lo + recipe.batch]
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x[b]), y[b])
                torch.autograd.backward(loss)
                opt.step()
        model.eval()
        seconds = time.perf_counter() - t0
        acc = accuracy(model, images[held], labels[held])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return Trained(model, images, labels, held, acc, seconds, seed, recipe)


def trained(seed: int = 0, cache_dir: Path | None = None, recipe: Recipe = RECIPE) -> Trained:
    """The network trained by ``recipe`` from ``seed``, with the images and labels. With ``cache_dir``, weights
    trained before (same recipe, same seed) are read from there, and new ones are written there."""
    if cache_dir is None:
        return train(seed, recipe)
    stem = cache_dir / f"{recipe.name}-{recipe.sha256()[:12]}-seed{seed}"
    weights, meta = stem.with_suffix(".pt"), stem.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        try:
            info = json.loads(meta.read_text())
            model = build(recipe)
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            images, labels = digits_data.tensors()
            _, held = digits_data.split(len(labels))
            return Trained(model.eval(), images, labels, held, info["accuracy"], info["seconds"], seed, recipe)
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable: train again and overwrite it
    done = train(seed, recipe)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed: a reader sees all or nothing
    torch.save(done.model.state_dict(), tmp)
    tmp.replace(weights)
    tmp.write_text(json.dumps({"accuracy": done.accuracy, "seconds": done.seconds, "recipe": asdict(recipe)}))
    tmp.replace(meta)
    return done
