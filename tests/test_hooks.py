"""Our forward hooks keep their handles and are removed however the block ends (no services needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from kb.render.hooks import StopForward, forward_hooks, run_until_stop, stop_at

pytestmark = pytest.mark.database_free  # pure torch/numpy: the same on either backend (see conftest)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_stop_at_keeps_the_output_and_computes_nothing_after_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    ran_last = []
    kept = {}
    with forward_hooks(
        [stop_at(model[1], lambda out: kept.update(act=out)), (model[2], lambda *a: ran_last.append(1))]
    ):
        assert _hooks(model) == 2
        run_until_stop(model, torch.zeros(1, 3, 8, 8))
    assert kept["act"].shape == (1, 4, 6, 6) and not ran_last
    assert _hooks(model) == 0


def test_hooks_are_removed_when_the_block_raises():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(RuntimeError), forward_hooks([stop_at(model[0])]):
        assert _hooks(model) == 1
        raise RuntimeError("a render failed")
    assert _hooks(model) == 0
    with pytest.raises(StopForward), forward_hooks([stop_at(model[0])]):  # inside the block the pass stops
        model(torch.zeros(1, 2))
    assert _hooks(model) == 0
    model(torch.zeros(1, 2))  # and outside it runs to the end


def test_hooks_registered_before_a_failing_registration_are_removed():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    named = dict(model.named_modules())
    with pytest.raises(KeyError), forward_hooks((named[p], lambda *a: None) for p in ("0", "1", "no.such")):
        pass
    assert _hooks(model) == 0


def test_every_hook_in_render_is_registered_through_forward_hooks():
    """kb/render registers hooks only in hooks.py (handles kept, removed in ``finally``); only the lucent adapter
    touches a module's hook dict, to drop what lucent's render_vis leaves behind."""
    render = Path(__file__).resolve().parent.parent / "kb" / "render"
    registers = sorted(p.name for p in render.rglob("*.py") if re.search(r"\.register_\w*hook\(", p.read_text()))
    touches = sorted(p.name for p in render.rglob("*.py") if "._forward_hooks" in p.read_text())
    assert registers == ["hooks.py"] and touches == ["lucent_adapter.py"]
