"""Forward hooks that always go away: each registration keeps its handle, and every handle is removed when the
block ends, however it ends (as captum and TransformerLens do). ``StopForward`` ends a pass at the last layer it
needs, so that nothing after that layer is computed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

ForwardHook = Callable[[torch.nn.Module, Any, Any], Any]


class StopForward(Exception):
    """Raised by a forward hook at the last layer a pass needs: nothing after it is computed."""


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[torch.nn.Module, ForwardHook]]) -> Iterator[list[RemovableHandle]]:
    """Registers each (module, hook) for the block; their handles are removed when it ends."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def stop_at(module: torch.nn.Module, keep: Callable[[Any], None] | None = None) -> tuple[torch.nn.Module, ForwardHook]:
    """A (module, hook) pair that hands the module's output to ``keep`` and ends the pass there."""

    def stop(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if keep is not None:
            keep(output)
        raise StopForward

    return module, stop


def run_until_stop(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One forward pass, ended early by a ``StopForward`` hook (or run to the end if none fires)."""
    with contextlib.suppress(StopForward):
        model(x)
