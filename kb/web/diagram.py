"""A subgraph or circuit as an SVG diagram, built on the server (the Circuits thread's figures): layers as rows,
earlier layers below; each unit is its feature visualization (a grey tile when not rendered) linking to its page;
each edge a curve coloured by sign (red excitatory, blue inhibitory) with width by |weight|.

Wide layers stay readable: a layer's units are ordered by the barycentre of their neighbours in the layers above
and below (a few sweeps, weighted by |weight|: fewer crossings, strong edges short), tiles shrink until the layer
fits one line, and a layer too wide even then is laid out as a few interleaved lines that keep that order from
left to right (unit i at x = i·step, on line i mod L), not as lines cut from it. Edges run straight up through
their own layers' rows and curve only between layers; they are drawn under the tiles, and each unit's number is
drawn on its tile over a background, where no edge reaches it.

Every edge is focusable and carries its weight and kernel as data attributes; static/kb.js shows them in a
tooltip on hover or focus (without script the edge's <title> still gives the weight). Units carry their key
(data-unit) and edges their ends (data-source, data-target), so static/explore-select.js can mirror a selection
made in the page's checkbox list on the diagram, and the other way round.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

from kb.render.thumbnails import Picture

SIZES = (56, 48, 40, 34, 30)  # a unit's tile, in px: the largest at which its layer fits one line
MAX_SPAN = 1060  # the units' width: the page's width less the layer names' column
WIDTH = 1164  # the whole figure at most, as wide as the page: drawn at its own size, never shrunk
LINE_GAP = 4  # between the interleaved lines of a layer too wide for one line
ROW_GAP = 96  # between layers: room for the edges' curves
LEFT = 104  # the layer names' column, wider for longer names (then less room for the units)
NAME_PX = 6.8  # a layer name's character, in px (11px bold)
TOP = 12
SWEEPS = 3  # down-and-up barycentre passes
LABEL_H = 12  # a unit's number, on its tile


@dataclass
class Unit:
    key: str
    path: str
    layer: str
    position: int  # the layer's position in the model
    picture: Picture | None = None  # kb.render.thumbnails: the preset's render, a fallback (marked), or none
    labels: list[str] = field(default_factory=list)


@dataclass
class Edge:
    source: str
    target: str
    weight: float | None  # None: not in the weight graph
    kernel: list[list[float]] | None = None
    note: str = ""


@dataclass(frozen=True)
class Place:
    """Where a unit's tile is: its top-left corner, its size, and the top and bottom of its layer's row."""

    x: float
    y: float
    size: int
    row_top: float
    row_bottom: float
    line: int  # 0: its layer's top line


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def _index(u: Unit) -> int:
    return int(u.key.rsplit(":", 1)[1])


def order(rows: list[list[Unit]], edges: list[Edge]) -> None:
    """Each row (a layer; the first drawn on top) sorted in place to cut the edges' crossings: the top row by
    index, then sweeps down and up that sort each row by the |weight|-weighted mean position of its neighbours
    in the row just swept (ties keep the row's current order)."""
    row_of = {u.key: r for r, row in enumerate(rows) for u in row}
    links: dict[tuple[str, int], list[tuple[str, float]]] = {}  # (unit, a row) -> its neighbours in that row
    for e in edges:
        if e.source in row_of and e.target in row_of:
            w = abs(e.weight) if e.weight is not None else 0.0
            links.setdefault((e.source, row_of[e.target]), []).append((e.target, w))
            links.setdefault((e.target, row_of[e.source]), []).append((e.source, w))
    place: dict[str, float] = {}

    def settle(row: list[Unit]) -> None:
        for i, u in enumerate(row):
            place[u.key] = (i + 0.5) / len(row)  # 0..1 across the row, whatever its length

    def sweep(r: int, fixed: int) -> None:
        def centre(u: Unit) -> tuple[float, float]:
            weighted = total = plain = 0.0
            near = links.get((u.key, fixed), ())
            for k, w in near:
                p = place[k]
                weighted += p * w
                total += w
                plain += p
            if not near:
                return place[u.key], place[u.key]
            return (weighted / total if total > 0 else plain / len(near)), place[u.key]

        rows[r].sort(key=centre)
        settle(rows[r])

    for row in rows:
        row.sort(key=lambda u: (u.layer, _index(u)))
        settle(row)
    for _ in range(SWEEPS):
        for r in range(1, len(rows)):
            sweep(r, r - 1)
        for r in range(len(rows) - 2, -1, -1):
            sweep(r, r + 1)
    for r in range(1, len(rows)):  # end on a downward pass: the roots' neighbours settle last
        sweep(r, r - 1)


def _gap(size: int) -> int:
    return max(8, size // 4)


def _fit(n: int, most: float) -> tuple[int, int, float]:
    """(tile size, lines, step between consecutive units) for a layer of n units in ``most`` px."""
    for s in SIZES:
        if n * (s + _gap(s)) - _gap(s) <= most:
            return s, 1, s + _gap(s)
    s = SIZES[-1]
    step = (most - s) / max(1, n - 1)
    lines = math.ceil((s + _gap(s)) / step)  # same-line neighbours (lines apart) leave a gap between tiles
    return s, lines, step


def layout(rows: list[list[Unit]]) -> tuple[dict[str, Place], list[tuple[float, Unit, int]], float, float]:
    """Each unit's Place (rows in order, top first), each row's (y, first unit, size), and the width and height."""
    left = max([LEFT] + [round(12 + NAME_PX * len(row[0].layer)) for row in rows])
    fits = [_fit(len(row), min(MAX_SPAN, WIDTH - left)) for row in rows]
    span = max((s + (len(row) - 1) * step for row, (s, _, step) in zip(rows, fits, strict=True)), default=SIZES[0])
    places: dict[str, Place] = {}
    heads: list[tuple[float, Unit, int]] = []
    y = TOP
    for row, (s, lines, step) in zip(rows, fits, strict=True):
        used = min(lines, len(row))
        bottom = y + used * s + (used - 1) * LINE_GAP
        x0 = left + (span - (s + (len(row) - 1) * step)) / 2
        for i, u in enumerate(row):
            line = i % lines
            places[u.key] = Place(x0 + i * step, y + line * (s + LINE_GAP), s, y, bottom, line)
        heads.append((y, row[0], s))
        y = bottom + ROW_GAP
    return places, heads, left + span + 4, y - ROW_GAP + TOP


def _path(a: Place, b: Place) -> str:
    """From the source's tile to the target's: straight through their own rows, a curve between the rows."""
    x1, x2 = a.x + a.size / 2, b.x + b.size / 2
    if a.row_top > b.row_bottom:  # the usual case: the source's layer below the target's
        y1, ya, yb, y2 = a.y, a.row_top, b.row_bottom, b.y + b.size
        bend = (ya - yb) / 2
        return (
            f"M{x1:.1f},{y1:.1f} L{x1:.1f},{ya:.1f} C{x1:.1f},{ya - bend:.1f} {x2:.1f},{yb + bend:.1f} "
            f"{x2:.1f},{yb:.1f} L{x2:.1f},{y2:.1f}"
        )
    y1, y2 = a.y, b.y + b.size  # a circuit's stated edge drawn the other way or within a layer
    if y1 < y2:
        y1, y2 = a.y + a.size, b.y
    bend = (y1 - y2) / 2
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - bend:.1f} {x2:.1f},{y2 + bend:.1f} {x2:.1f},{y2:.1f}"


def _picture(u: Unit, x: float, y: float, s: int) -> str:
    """The unit's picture (a placeholder tile when it has none; a fallback marked in its corner), in a group that
    static/live.js swaps when the thumbnail lands (data-thumb)."""
    p = u.picture
    if p is None:
        inner = f'<rect class="ph" x="{x:.1f}" y="{y:.0f}" width="{s}" height="{s}" rx="3"/>'
    else:
        inner = (
            f'<image href="{escape(p.url)}" x="{x:.1f}" y="{y:.0f}" width="{s}" height="{s}" '
            f'preserveAspectRatio="xMidYMid slice"/>'
        )
        if p.fallback:
            note = escape(f"not the thumbnail preset: a render with {p.fallback}")
            inner += (
                f'<g class="fallback"><title>{note}</title>'
                f'<rect x="{x + s - 13:.0f}" y="{y + 1:.0f}" width="12" height="9" rx="2"/>'
                f'<text x="{x + s - 7:.0f}" y="{y + 8.5:.1f}" text-anchor="middle">≠</text></g>'
            )
    return f'<g class="pic" data-thumb="{escape(u.key)}">{inner}</g>'


def svg(units: list[Unit], edges: list[Edge], label: str) -> Markup:
    by_position: dict[int, list[Unit]] = {}
    for u in units:
        by_position.setdefault(u.position, []).append(u)
    rows = [by_position[p] for p in sorted(by_position, reverse=True)]  # later layers on top
    order(rows, edges)
    xy, head_rows, width, height = layout(rows)
    heads = []
    for (y, first, s), row in zip(head_rows, rows, strict=True):
        count = f'<tspan class="count" x="4" dy="14">{len(row):,} units</tspan>' if len(row) > 1 else ""
        heads.append(
            f'<text class="layer" x="4" y="{y + s / 2 + (-3 if count else 4):.0f}">{escape(first.layer)}{count}</text>'
        )

    scale = max((abs(e.weight) for e in edges if e.weight is not None), default=0.0) or 1.0
    widest = min(6.0, max(2.0, 6.0 * math.sqrt(30 / max(1, len(edges)))))  # many edges: thinner ones
    marks = []
    for i, e in enumerate(edges):
        if e.source not in xy or e.target not in xy:
            continue
        d = _path(xy[e.source], xy[e.target])
        sx, sy = (float(v) for v in d[1:].split(" ", 1)[0].split(","))
        hit = f"{d} M{sx - 4.5:.1f},{sy:.1f} h9"  # never zero-wide (a straight vertical edge): a box to point at
        if e.weight is None:
            cls, stroke, wid = "edge absent", "#999", 1.5
            title = f"{_short(e.source)} → {_short(e.target)}: not in the weight graph"
        else:
            cls = "edge pos" if e.weight >= 0 else "edge neg"
            stroke = "#b2182b" if e.weight >= 0 else "#2166ac"
            wid = 0.75 + (widest - 0.75) * abs(e.weight) / scale
            title = f"{_short(e.source)} → {_short(e.target)}: weight {e.weight:+.4f}"
        if e.note:
            title += f" · {e.note}"
        data, dash = "", ' stroke-dasharray="4 3"' if e.weight is None else ""
        if e.kernel:
            data = f' data-kernel="{escape(json.dumps([[round(v, 5) for v in r] for r in e.kernel]))}"'
        marks.append(
            f'<g class="{cls}" tabindex="0" role="img" aria-label="{escape(title)}" data-edge="{i}" '
            f'data-source="{escape(e.source)}" data-target="{escape(e.target)}" data-title="{escape(title)}"{data}>'
            f'<path class="hit" d="{hit}" stroke="transparent" stroke-width="{max(wid, 9):.1f}" fill="none"/>'
            f'<path d="{d}" stroke="{stroke}" stroke-width="{wid:.2f}" fill="none"{dash}/>'
            f"<title>{escape(title)}</title></g>"
        )
    pictures = []
    for row in rows:
        for u in sorted(row, key=lambda u: -xy[u.key].line):  # lower lines first: upper tiles on top
            p = xy[u.key]
            x, y0, s = p.x, p.y, p.size
            labels = f" · {', '.join(u.labels)}" if u.labels else ""
            name = escape(_short(u.key) + labels)
            picture = _picture(u, x, y0, s)
            number = str(_index(u))
            lw = min(s, 6.2 * len(number) + 4)
            pictures.append(
                f'<a class="unit" href="{escape(u.path)}" data-unit="{escape(u.key)}" aria-label="{name}">'
                f"<title>{name}</title>{picture}"
                f'<rect class="frame" x="{x:.1f}" y="{y0:.0f}" width="{s}" height="{s}" rx="3"/>'
                f'<rect class="label" x="{x + (s - lw) / 2:.1f}" y="{y0 + s - LABEL_H - 1:.0f}" width="{lw:.1f}" '
                f'height="{LABEL_H}" rx="2"/>'
                f'<text x="{x + s / 2:.1f}" y="{y0 + s - 4:.0f}" text-anchor="middle">{number}</text></a>'
            )
    return Markup(
        f'<svg class="diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="group" aria-label="{escape(label)}">'
        f'<g class="layers">{"".join(heads)}</g><g class="edges">{"".join(marks)}</g>'
        f'<g class="units">{"".join(pictures)}</g>'
        f'<g class="tip" visibility="hidden" aria-hidden="true"></g></svg>'
    )
