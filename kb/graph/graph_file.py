"""A model version's serving graph as one file that every server process memory-maps.

The file holds the arrays of ``kb.graph.store.ModelGraph`` (the neuron ids and, for inputs and outputs, the
rows sorted by weight with their magnitude permutation), so a server maps it instead of reading and sorting
the edges, and the pages it touches are shared by all server processes on the machine. It is named by the
model key and the weights' sha256 and lives under ``KB_DATA_DIR/graphs``.

Layout: ``MAGIC`` (8 bytes), the JSON header's length (u64 LE), a crc32 of every byte after the first 24
(u32 LE, then 4 zero bytes), the JSON header, then each array at a 64-byte boundary. The header names the model
version (database id, key, sha256), its layers and links, the counts, and where each array is. A reader checks
the magic, size and crc32 (corruption), then the caller checks the header against the database (staleness).
The crc32 of a file is computed once after each change to it (a ``.verified`` stamp beside it records the
file's inode, size, mtime and ctime with the checksum), so a server maps VGG16's 0.7 GB without reading it.

Written by ``Writer`` one chunk of target units at a time, for graphs whose links join consecutive layers
with every pair of units (what the importer produces): memory stays at one link's weight matrix.
numpy only.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kb.graph.store import LayerInfo, ModelGraph, Rows

MAGIC = b"KBGRAPH1"
VERSION = 1
PREFIX = 24
ALIGN = 64
SUFFIX = ".kbgraph"
_ROWS = (  # (name, dtype, length: "units" + extra or "edges")
    ("indptr", "<i8", "units+1"),
    ("other", "<i4", "edges"),
    ("weight", "<f4", "edges"),
    ("magnitude", "<f4", "edges"),
    ("by_magnitude", "<i4", "edges"),
    ("positives", "<i4", "units"),
    ("negatives", "<i4", "units"),
)
_CRC_CHUNK = 64 << 20


class GraphFileProblem(ValueError):
    """The file is missing, corrupt or stale; the caller rebuilds it."""


def file_name(key: str, sha256: str) -> str:
    return f"{key}@{sha256}{SUFFIX}"


@dataclass(frozen=True, order=True)
class Link:
    source: int  # layer positions
    target: int
    method: str


@dataclass(frozen=True)
class Expected:
    """What the database says the file must describe."""

    model_id: int
    key: str
    sha256: str
    layers: list[LayerInfo]
    links: list[Link]
    neuron_ids: np.ndarray  # int64 per ordinal

    @property
    def units(self) -> int:
        return sum(layer.units for layer in self.layers)

    @property
    def edges(self) -> int:
        return sum(self.layers[k.source].units * self.layers[k.target].units for k in self.links)

    def header(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "model_id": int(self.model_id),
            "key": self.key,
            "sha256": self.sha256,
            "units": self.units,
            "edges": self.edges,
            "layers": [[int(x.id), x.key, x.position, x.units, x.first] for x in self.layers],
            "links": [[k.source, k.target, k.method] for k in self.links],
        }


def _layout(units: int, edges: int) -> tuple[dict[str, tuple[int, str, int]], int]:
    """name -> (offset relative to the data start, dtype, count), and the data's size."""
    out, at = {}, 0
    sizes = {"units": units, "units+1": units + 1, "edges": edges}
    for name, dtype, count in [("neuron_ids", "<i8", "units")] + [
        (f"{d}.{n}", t, c) for d in ("inputs", "outputs") for n, t, c in _ROWS
    ]:
        at = -(-at // ALIGN) * ALIGN
        out[name] = (at, dtype, sizes[count])
        at += np.dtype(dtype).itemsize * sizes[count]
    return out, at


def _crc(buf: mmap.mmap, start: int) -> int:
    crc = 0
    view = memoryview(buf)
    for lo in range(start, len(view), _CRC_CHUNK):
        crc = zlib.crc32(view[lo : lo + _CRC_CHUNK], crc)
    view.release()
    return crc


def _data_start(header_len: int) -> int:
    return -(-(PREFIX + header_len) // ALIGN) * ALIGN


def stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamp(path: Path, crc: int) -> str:
    """The file's identity and last change (inode, size, mtime and ctime in ns) with its checksum: any write to
    the file changes its ctime, so a matching stamp means the checksum was verified since the last change."""
    st = os.stat(path)
    return f"{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {crc:08x}"


def _read_stamp(path: Path) -> str | None:
    try:
        return stamp_path(path).read_text().strip()
    except OSError:
        return None


def _write_stamp(path: Path, crc: int) -> None:
    with contextlib.suppress(OSError):  # a read-only folder: every process verifies the checksum itself
        tmp = stamp_path(path).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_stamp(path, crc) + "\n")
        os.replace(tmp, stamp_path(path))


def descending(values: np.ndarray) -> np.ndarray:
    """Each row's column indices (int32) ordering its values from largest to smallest, ties by column: what
    ``np.argsort(-values, axis=1, kind="stable")`` gives, 2.7 times as fast on a 256 x 4608 block. Each value
    becomes a 64-bit key (the float's bits made order-preserving and inverted, above its column), so numpy's
    unstable SIMD sort of distinct keys gives the stable order."""
    cols = values.shape[1]
    if cols >= 1 << 32:
        raise ValueError(f"{cols} columns do not fit in a sort key")
    bits = (np.asarray(values, np.float32) + np.float32(0)).view(np.uint32)  # + 0 makes -0.0 into 0.0
    flipped = np.where(bits >> 31, bits, ~bits & np.uint32(0x7FFFFFFF))  # larger value -> smaller key
    keys = flipped.astype(np.uint64) << np.uint64(32)
    keys |= np.arange(cols, dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int32)


class Writer:
    """Writes the file for ``expected`` from each link's weights, given by chunks of target units in order.

    The per-edge arrays go out with ``pwrite`` as they are sorted (not through a map: the written pages stay in
    the page cache, not in the writer's memory); the per-unit arrays are kept and written at the end.
    """

    _SMALL = (
        "neuron_ids",
        *(f"{d}.{n}" for d in ("inputs", "outputs") for n in ("indptr", "positives", "negatives")),
    )

    def __init__(self, path: Path, expected: Expected):
        self.path = Path(path)
        self.expected = x = expected
        self._check_chain()
        self.header = json.dumps(x.header(), separators=(",", ":")).encode()
        self.layout, size = _layout(x.units, x.edges)
        self.start = _data_start(len(self.header))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(self._fd, self.start + size)
        self.small = {name: np.zeros(self.layout[name][2], self.layout[name][1]) for name in self._SMALL}
        self.small["neuron_ids"][:] = x.neuron_ids
        self._pending: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._crc: int | None = None
        self._fill_indptr()

    def _check_chain(self) -> None:
        x = self.expected
        if len({k.target for k in x.links}) != len(x.links) or len({k.source for k in x.links}) != len(x.links):
            raise ValueError("a graph file needs each layer to be the target and the source of one link at most")
        if len(x.neuron_ids) != x.units:
            raise ValueError(f"{len(x.neuron_ids)} neuron ids for {x.units} units")

    def _fill_indptr(self) -> None:
        x = self.expected
        into = {k.target: x.layers[k.source].units for k in x.links}
        out_of = {k.source: x.layers[k.target].units for k in x.links}
        for direction, per_row in (("inputs", into), ("outputs", out_of)):
            counts = np.concatenate([np.full(layer.units, per_row.get(layer.position, 0)) for layer in x.layers])
            np.cumsum(counts, out=self.small[f"{direction}.indptr"][1:])

    def _put(self, name: str, at: int, values: np.ndarray) -> None:
        offset, dtype, _ = self.layout[name]
        data = np.ascontiguousarray(values, dtype=dtype)
        os.pwrite(self._fd, data.data.cast("B"), self.start + offset + at * data.itemsize)

    def _rows(
        self, direction: str, first_row: int, other_first: int, weight: np.ndarray, magnitude: np.ndarray
    ) -> None:
        """Writes rows first_row.. of a direction from dense [rows, others] weights."""
        k, n = weight.shape
        indptr = self.small[f"{direction}.indptr"]
        lo = int(indptr[first_row])
        if int(indptr[first_row + k]) != lo + k * n:
            raise ValueError(f"{direction}: rows {first_row}..{first_row + k - 1} do not have {n} neighbours each")
        order = descending(weight)
        w = np.take_along_axis(weight, order, 1)
        self._put(f"{direction}.weight", lo, w)
        self.small[f"{direction}.positives"][first_row : first_row + k] = (w > 0).sum(axis=1)
        self.small[f"{direction}.negatives"][first_row : first_row + k] = (w < 0).sum(axis=1)
        del w
        g = np.take_along_axis(magnitude, order, 1)
        self._put(f"{direction}.magnitude", lo, g)
        order += other_first
        self._put(f"{direction}.other", lo, order)
        del order
        self._put(f"{direction}.by_magnitude", lo, descending(g))

    def add(self, link: int, rows: np.ndarray, weight: np.ndarray, magnitude: np.ndarray) -> None:
        """Weights of target units ``rows`` (indices in the target layer, consecutive) from every source unit."""
        x = self.expected
        k = x.links[link]
        s, t = x.layers[k.source], x.layers[k.target]
        weight = np.asarray(weight, dtype=np.float32).reshape(len(rows), s.units)
        magnitude = np.asarray(magnitude, dtype=np.float32).reshape(len(rows), s.units)
        r0 = int(rows[0])
        if not np.array_equal(rows, np.arange(r0, r0 + len(rows))):
            raise ValueError("target units must come in consecutive chunks")
        self._rows("inputs", t.first + r0, s.first, weight, magnitude)
        if link not in self._pending:  # outputs need whole columns: keep this link's matrix until it is complete
            self._pending[link] = (
                np.empty((t.units, s.units), np.float32),
                np.empty((t.units, s.units), np.float32),
                np.zeros(t.units, bool),
            )
        w_all, g_all, seen = self._pending[link]
        w_all[r0 : r0 + len(rows)] = weight
        g_all[r0 : r0 + len(rows)] = magnitude
        seen[r0 : r0 + len(rows)] = True
        if seen.all():
            del self._pending[link]
            step = max(1, (8 << 20) // max(1, 4 * t.units))
            for lo in range(0, s.units, step):
                hi = min(lo + step, s.units)
                self._rows(
                    "outputs",
                    s.first + lo,
                    t.first,
                    np.ascontiguousarray(w_all[:, lo:hi].T),
                    np.ascontiguousarray(g_all[:, lo:hi].T),
                )

    def finish(self) -> Path:
        """Checksums the file and renames it into place (atomically: readers see the old file or the new one)."""
        self.seal()
        return self.publish()

    def seal(self) -> None:
        """Writes the per-unit arrays and the header, checksums the file and syncs it to disk."""
        if self._pending:
            raise ValueError(f"links {sorted(self._pending)} are incomplete")
        for name, values in self.small.items():
            self._put(name, 0, values)
        os.pwrite(self._fd, self.header, PREFIX)
        os.pwrite(self._fd, MAGIC + len(self.header).to_bytes(8, "little"), 0)
        crc, at, end = 0, PREFIX, os.fstat(self._fd).st_size
        while at < end:
            piece = os.pread(self._fd, min(_CRC_CHUNK // 4, end - at), at)
            crc = zlib.crc32(piece, crc)
            at += len(piece)
        os.pwrite(self._fd, crc.to_bytes(4, "little") + bytes(4), 16)
        os.fsync(self._fd)
        os.close(self._fd)
        self._crc = crc

    def publish(self) -> Path:
        """Renames the sealed file into place (atomically: readers see the old file or the new one)."""
        if self._crc is None:
            raise ValueError("the graph file is not sealed")
        os.replace(self.tmp, self.path)
        _write_stamp(self.path, self._crc)  # it was just computed from the bytes on disk
        return self.path

    def abort(self) -> None:
        self._pending.clear()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self.tmp.unlink(missing_ok=True)


@dataclass
class Mapped:
    path: Path
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    nbytes: int


def open_file(path: Path) -> Mapped:
    """Maps a graph file after checking its magic, size and checksum (``GraphFileProblem`` if not)."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise GraphFileProblem(f"{path.name} is missing") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < PREFIX:
            raise GraphFileProblem(f"{path.name} is truncated ({size} bytes)")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if mm[:8] != MAGIC:
        raise GraphFileProblem(f"{path.name} is not a graph file (version {VERSION})")
    header_len = int.from_bytes(mm[8:16], "little")
    try:
        header = json.loads(bytes(mm[PREFIX : PREFIX + header_len]))
        start = _data_start(header_len)
        layout, data = _layout(int(header["units"]), int(header["edges"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphFileProblem(f"{path.name} has a damaged header ({type(exc).__name__})") from None
    if size != start + data:
        raise GraphFileProblem(f"{path.name} has {size} bytes, its header describes {start + data}")
    crc = int.from_bytes(mm[16:20], "little")
    if _stamp(path, crc) != _read_stamp(path):  # not verified since it last changed
        if _crc(mm, PREFIX) != crc:
            raise GraphFileProblem(f"{path.name} is corrupt (checksum mismatch)")
        _write_stamp(path, crc)
    arrays = {name: np.frombuffer(mm, dtype=dt, count=n, offset=start + off) for name, (off, dt, n) in layout.items()}
    return Mapped(path, header, arrays, size)


def check(mapped: Mapped, expected: Expected) -> None:
    """The file describes exactly the database's model version: ids, hash, layers, links, counts, neuron ids."""
    h, want = mapped.header, expected.header()
    for field in ("version", "model_id", "key", "sha256", "units", "edges", "layers", "links"):
        if h.get(field) != want[field]:
            raise GraphFileProblem(f"{mapped.path.name} is stale: its {field} differs from the database's")
    if not np.array_equal(mapped.arrays["neuron_ids"], expected.neuron_ids):
        raise GraphFileProblem(f"{mapped.path.name} is stale: its neuron ids differ from the database's")


def to_graph(mapped: Mapped) -> ModelGraph:
    h, a = mapped.header, mapped.arrays
    layers = [LayerInfo(i, key, position, units, first) for i, key, position, units, first in h["layers"]]
    rows = {d: Rows(**{n: a[f"{d}.{n}"] for n, _, _ in _ROWS}) for d in ("inputs", "outputs")}
    methods = {(s, t): m for s, t, m in h["links"]}
    return ModelGraph(
        h["model_id"],
        h["key"],
        h["sha256"],
        layers,
        a["neuron_ids"],
        rows["inputs"],
        rows["outputs"],
        methods,
        str(mapped.path),
    )
