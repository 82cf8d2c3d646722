"""Loading an architecture's weights (torchvision's weights API, a local checkpoint, or seeded random) and
the sha256 that pins a model version."""

from __future__ import annotations

import hashlib
import re
import urllib.error
from pathlib import Path
from typing import Any

import torch

from kb.graph.zoo.spec import Architecture, StateDict


class WeightsProblem(ValueError):
    pass


TRAINED = "trained"  # the weights of an architecture that trains here (``Architecture.train``): its default
_TRAINED_SEED = re.compile(r"^trained \S+ seed=(\d+)")  # the start of what ``Architecture.train`` describes


def state_dict_sha256(state: StateDict) -> str:
    """sha256 over every tensor in key order (name, dtype, shape, bytes), so equal weights hash equal.

    BatchNorm's ``num_batches_tracked`` counters are skipped: they count training steps, not weights.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        if name.endswith("num_batches_tracked"):
            continue
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(b"\0" + str(t.dtype).encode() + b"\0" + repr(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the tensor's own bytes, not a copy
    return h.hexdigest()


def _unwrap(obj: Any) -> StateDict:  # whatever torch.load read
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model"):
            if k in obj and isinstance(obj[k], (dict, torch.nn.Module)):
                return _unwrap(obj[k])
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise WeightsProblem(
        "the checkpoint holds no state dict (expected a dict of tensors, or one under 'state_dict' or 'model')"
    )


def fit(model: torch.nn.Module, arch: Architecture, state: StateDict, what: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in arch.ignore_keys)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shapes differ, e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise WeightsProblem(f"{what} does not fit {arch.source}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load(arch: Architecture, weights: str | None, seed: int | None = None) -> tuple[torch.nn.Module, str]:
    """(model in eval mode, a description of the weights). ``weights``: None or a weights name
    (torchvision's, e.g. IMAGENET1K_V1 or DEFAULT; lucent's: lucid), a checkpoint path, or "random" (with ``seed``);
    for an architecture that trains here (demo:digits), None, DEFAULT or "trained" train it from ``seed`` (default 0).
    A named set is described by the name of the weights loaded (DEFAULT resolved)."""
    weights = weights or "DEFAULT"
    if weights == "random":
        seed = 0 if seed is None else seed
        torch.manual_seed(seed)
        model = arch.build()
        return model.eval(), f"random seed={seed} torch={torch.__version__.split('+')[0]}"
    if arch.train is not None and weights in ("DEFAULT", TRAINED):  # trained here by the recipe, from the seed
        seed = 0 if seed is None else seed
        described, state = arch.train(seed)
        torch.manual_seed(0)
        model = arch.build()
        fit(model, arch, state, f"weights trained from seed {seed}")
        return model.eval(), described
    if seed is not None:
        raise WeightsProblem("--seed only applies to --weights random, and to weights trained here (demo:digits)")
    torch.manual_seed(0)
    model = arch.build()
    path = Path(weights).expanduser()
    looks_like_path = path.suffix in (".pt", ".pth", ".ckpt", ".bin") or "/" in weights or weights.startswith(".")
    if path.exists() or looks_like_path:
        if not path.is_file():
            raise WeightsProblem(f"checkpoint {weights} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsProblem(
                f"cannot read checkpoint {weights}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None
        fit(model, arch, _unwrap(obj), f"checkpoint {weights}")
        return model.eval(), f"checkpoint {path.resolve()}"
    if arch.pretrained is None:
        trains = f"--weights {TRAINED} (trained here from --seed), " if arch.train is not None else ""
        raise WeightsProblem(
            f"{arch.source} has no published weights {weights!r}; use {trains}--weights PATH or --weights random"
        )
    try:
        loaded, state = arch.pretrained(weights)
    except WeightsProblem:
        raise
    except ValueError as exc:
        raise WeightsProblem(str(exc)) from None
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsProblem(
            f"cannot fetch weights {weights!r} for {arch.source} ({type(exc).__name__}: {str(exc)[:160]}); "
            f"offline, place the file in torch's hub cache ({torch.hub.get_dir()}/checkpoints) "
            f"or pass --weights PATH, or --weights random"
        ) from None
    fit(model, arch, state, f"weights {loaded}")
    return model.eval(), loaded


def reload(arch: Architecture, described: str) -> torch.nn.Module:
    """The model again from the description ``load`` returned (render workers do this)."""
    if described.startswith("random seed="):
        seed = int(described.split()[1].split("=")[1])
        return load(arch, "random", seed)[0]
    if (trained := _TRAINED_SEED.match(described)) and arch.train is not None:
        return load(arch, TRAINED, int(trained.group(1)))[0]
    if described.startswith("checkpoint "):
        return load(arch, described[len("checkpoint ") :])[0]
    return load(arch, described)[0]
