"""A link program: how the units of one significant layer reach those of the next.

A program is a list of terms. Each term is a chain of linear maps (``kb.graph.linear``) from every source
channel to a slice of the target channels: one term per Inception branch, two terms (branch and shortcut)
over the same slice for a ResNet block, a single term for a plain conv. Terms over the same slice add.

Programs are what the database stores per pair of layers (``layer_link.program``), so any edge's kernel can
be recomputed on demand without torch; ``expand`` computes every edge's weight and magnitude at import.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from kb.graph.linear import Dense, Op, Spatial, add, fold, folded_size, to_dense

DIRECT = "direct"
EXPANDED = "expanded"

Meta = dict[str, Any]  # a program's JSON structure (layer_link.program); its arrays are stored beside it


@dataclass(frozen=True)
class Term:
    start: int  # first target channel this term writes
    stop: int  # one past the last
    ops: tuple[Op, ...]
    label: str = ""  # e.g. "branch2" or "shortcut", for people reading the program

    @property
    def channels(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class LinkProgram:
    in_channels: int
    out_channels: int
    terms: tuple[Term, ...]
    notes: tuple[str, ...] = ()  # documented approximations, e.g. "maxpool3 (3x3/2) linearised as its average"

    @property
    def method(self) -> str:
        if len(self.terms) == 1 and sum(op.parametric for op in self.terms[0].ops) == 1:
            return DIRECT
        return EXPANDED

    def slices(self) -> list[tuple[int, int]]:
        return sorted({(t.start, t.stop) for t in self.terms})

    def kernels(self, start: int, stop: int, rows: np.ndarray | None = None) -> Dense:
        """The expanded kernels of targets ``rows`` (relative to ``start``) of one target slice."""
        parts = []
        for t in self.terms:
            if (t.start, t.stop) != (start, stop):
                continue
            parts.append(to_dense(fold(list(t.ops), rows, t.channels), self.in_channels))
        return add(parts)

    def kernel(self, target: int) -> Dense:
        """The kernel of one target channel: weight shape [1, in_channels, kh, kw]."""
        for start, stop in self.slices():
            if start <= target < stop:
                return self.kernels(start, stop, np.array([target - start]))
        raise IndexError(f"target channel {target} is outside 0..{self.out_channels - 1}")

    def expand(
        self, chunk: int = 256, budget: int = 1 << 23
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        """Yields (target channel, weight[in], magnitude[in]) blocks: weight = sum(K), magnitude = ||K||₂.

        At most ``chunk`` targets at a time, fewer when their kernels would exceed ``budget`` values (VGG16's
        conv5_3 -> fc6 kernels are 14x14 over 512 inputs: 83 targets, 32 MB)."""
        for start, stop in self.slices():
            terms = [t for t in self.terms if (t.start, t.stop) == (start, stop)]
            head = _tiling_head(terms)
            made = [terms[0].ops[1:]] if head else [t.ops for t in terms]  # the chains whose kernels are made
            kh, kw = max((folded_size(ops) for ops in made), default=(1, 1))
            chunk = max(1, min(chunk, budget // max(1, self.in_channels * kh * kw)))
            for lo in range(0, stop - start, chunk):
                rows = np.arange(lo, min(lo + chunk, stop - start))
                if head is not None:
                    weight, magnitude = self._tiled_sums(head, terms[0], rows)
                else:
                    total, squares = _sums(self.kernels(start, stop, rows).weight)
                    weight, magnitude = total.astype(np.float32), np.sqrt(squares).astype(np.float32)
                yield rows + start, weight, magnitude

    def _tiled_sums(
        self, head: Spatial, term: Term, rows: np.ndarray
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """sum(K) and ||K||₂ of the kernels of ``rows`` when K = head, then the rest of the term, and head's windows
        do not overlap (VGG16's 2x2/2 pool before fc6): K's values are each head value times each value of the
        rest's kernel B, once, so sum(K) = sum(head)·sum(B) and ||K||₂ = ||head||₂·||B||₂. K (4x B) is never made."""
        total, squares = _sums(to_dense(fold(list(term.ops[1:]), rows, term.channels), self.in_channels).weight)
        f = head.filter.astype(np.float64)
        return (total * f.sum()).astype(np.float32), np.sqrt(squares * (f * f).sum()).astype(np.float32)


def _sums(kernels: np.ndarray) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each [target, source] kernel's sum and sum of squares, in float64."""
    flat = kernels.reshape(kernels.shape[0], kernels.shape[1], -1)
    return flat.sum(axis=2, dtype=np.float64), np.einsum("tsk,tsk->ts", flat, flat, dtype=np.float64)


def _tiling_head(terms: list[Term]) -> Spatial | None:
    """The first map of a slice's only chain when it is a channel-wise window whose stride is at least its size
    (its windows tile the input, none overlapping) and more maps follow; else None."""
    if len(terms) != 1 or len(terms[0].ops) < 2:
        return None
    head = terms[0].ops[0]
    if not isinstance(head, Spatial):
        return None
    (kh, kw), (sh, sw) = head.size, head.stride
    return head if sh >= kh and sw >= kw else None


# -- storage -------------------------------------------------------------------------------------------


def dumps(program: LinkProgram) -> tuple[Meta, bytes]:
    """(JSON structure, npz bytes of its arrays). No pickle: the API loads these."""
    buf = io.BytesIO()
    meta = dump(program, buf)
    return meta, buf.getvalue()


def dump(program: LinkProgram, file: IO[bytes]) -> Meta:
    """Writes the npz of the program's arrays to ``file`` (streamed: numpy writes large arrays in pieces) and
    returns its JSON structure."""
    arrays: dict[str, np.ndarray] = {}
    terms = []
    for ti, t in enumerate(program.terms):
        ops = []
        for oi, op in enumerate(t.ops):
            name = f"t{ti}o{oi}"
            if isinstance(op, Dense):
                arrays[name] = op.weight
                kind = "dense"
            else:
                arrays[name] = op.filter
                kind = "spatial"
            ops.append(
                {
                    "kind": kind,
                    "array": name,
                    "stride": list(op.stride),
                    "pad": list(op.pad),
                    "parametric": op.parametric,
                    "source": op.source,
                }
            )
        terms.append({"start": t.start, "stop": t.stop, "label": t.label, "ops": ops})
    meta = {
        "in_channels": program.in_channels,
        "out_channels": program.out_channels,
        "terms": terms,
        "notes": list(program.notes),
    }
    np.savez(file, allow_pickle=False, **arrays)
    return meta


# numpy reads each array's header with ast.literal_eval, and CPython 3.11's AST constructor keeps its recursion
# depth in interpreter-wide state: two request threads parsing at once can fail with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905; seen in CI on 3.11.7). A lock makes the reads one at a time;
# a program is read once per layer and then cached, so nobody waits on it for long.
_NPZ_READ = threading.Lock()


def loads(meta: Meta | str, blob: bytes) -> LinkProgram:
    structure: Meta = json.loads(meta) if isinstance(meta, str) else meta
    with _NPZ_READ:  # the archive reads each array lazily: every read below is a header parse
        return _build(structure, np.load(io.BytesIO(blob), allow_pickle=False))


def _build(structure: Meta, arrays: Any) -> LinkProgram:
    terms = []
    for t in structure["terms"]:
        ops: list[Op] = []
        for o in t["ops"]:
            a = arrays[o["array"]]
            if o["kind"] == "dense":
                ops.append(Dense(a, tuple(o["stride"]), tuple(o["pad"]), o["parametric"], o["source"]))
            else:
                ops.append(Spatial(a, tuple(o["stride"]), tuple(o["pad"]), o["source"]))
        terms.append(Term(t["start"], t["stop"], tuple(ops), t.get("label", "")))
    return LinkProgram(
        structure["in_channels"], structure["out_channels"], tuple(terms), tuple(structure.get("notes", ()))
    )
