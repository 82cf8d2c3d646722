"""The lucent adapter's calls leave lucent as they found it: its module-level settings (kb.render.lucent_adapter's
LUCENT_GLOBALS) are the call's device during a call, under the adapter's lock, and what they were before once the
call ends, as are the model's hooks, also when the call raises."""

import threading

import pytest
import torch
from torch import nn

from kb.render import lucent_adapter as A

SENTINEL = torch.device("meta")  # a device no call asks for: set before the call, it must be there after it


class Probe(nn.Module):
    """A small conv net that records, at each forward pass, lucent's globals and whether another thread could take
    the adapter's lock; ``fail`` raises from the pass (not a RuntimeError, which lucent's loop swallows)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fail = fail
        self.seen: list[dict[str, object]] = []
        self.lock_free: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(A.lucent_globals())
        free: list[bool] = []
        other = threading.Thread(target=lambda: free.append(_try_lock()))
        other.start()
        other.join()
        self.lock_free.append(free[0])
        if self.fail:
            raise ValueError("the model failed")
        return self.conv(x)


def _try_lock() -> bool:
    if A._lucent_lock.acquire(blocking=False):
        A._lucent_lock.release()
        return True
    return False


@pytest.fixture
def sentinel_globals(monkeypatch):
    """lucent's globals set to SENTINEL (monkeypatch puts the real values back after the test)."""
    import importlib

    for module, attr in A.LUCENT_GLOBALS:
        monkeypatch.setattr(importlib.import_module(module), attr, SENTINEL)
    return dict.fromkeys(A.lucent_globals(), SENTINEL)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_a_call_sets_lucents_globals_under_the_lock_and_restores_them(sentinel_globals):
    model = Probe().eval()
    image = A.plain_render_vis(model, "conv", 0, size=16, steps=2, device="cpu")
    assert image.shape == (16, 16, 3)
    assert model.seen and all(seen == dict.fromkeys(sentinel_globals, torch.device("cpu")) for seen in model.seen)
    assert model.lock_free and not any(model.lock_free)  # held for the call
    assert A.lucent_globals() == sentinel_globals
    assert _hooks(model) == 0 and _try_lock()


def test_a_call_that_raises_restores_lucents_globals_and_removes_its_hooks(sentinel_globals):
    model = Probe(fail=True).eval()
    with pytest.raises(ValueError, match="the model failed"):
        A.plain_render_deepdream(model, "conv", size=16, steps=2, device="cpu")
    assert model.seen == [dict.fromkeys(sentinel_globals, torch.device("cpu"))]
    assert A.lucent_globals() == sentinel_globals
    assert _hooks(model) == 0 and _try_lock()
