"""A subgraph or circuit as an SVG diagram, built on the server (the Circuits thread's figures): layers as rows,
earlier layers below; each unit is its feature visualization (a grey tile when not rendered) linking to its page;
each edge a curve coloured by sign (red excitatory, blue inhibitory) with width by |weight|.

Every edge is focusable and carries its weight and kernel as data attributes; static/kb.js shows them in a
tooltip on hover or focus (without script the edge's <title> still gives the weight). Units carry their key
(data-unit) and edges their ends (data-source, data-target), so static/explore-select.js can mirror a selection
made in the page's checkbox list on the diagram, and the other way round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

from kb.render.thumbnails import Picture

THUMB = 56  # a unit's picture, in px
SMALL = 40  # in layers with more units than fit a line
GAP = 16  # between pictures in a line
LINE_GAP = 14  # between the lines of one layer when it wraps
ROW_GAP = 88  # between layers: room for the edges
PER_LINE = 14  # units per line before a layer wraps
LEFT = 96  # the layer names' column
TOP = 12


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


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def _order(rows: list[list[Unit]], edges: list[Edge]) -> None:
    """Top row by key; each row below by the mean x of its neighbours above (fewer crossings)."""
    near: dict[str, set[str]] = {}
    for e in edges:
        near.setdefault(e.source, set()).add(e.target)
        near.setdefault(e.target, set()).add(e.source)
    place: dict[str, float] = {}
    for r, row in enumerate(rows):
        if r == 0:
            row.sort(key=lambda u: (u.layer, int(u.key.rsplit(":", 1)[1])))
        else:

            def centre(u: Unit) -> float:
                xs = [place[k] for k in near.get(u.key, ()) if k in place]
                return sum(xs) / len(xs) if xs else 1e9

            row.sort(key=centre)
        for i, u in enumerate(row):
            place[u.key] = i - (len(row) - 1) / 2


def _picture(u: Unit, x: float, y: float, s: int) -> str:
    """The unit's picture (a placeholder tile when it has none; a fallback marked in its corner), in a group that
    static/live.js swaps when the thumbnail lands (data-thumb)."""
    p = u.picture
    if p is None:
        inner = f'<rect class="ph" x="{x:.0f}" y="{y:.0f}" width="{s}" height="{s}" rx="3"/>'
    else:
        inner = (
            f'<image href="{escape(p.url)}" x="{x:.0f}" y="{y:.0f}" width="{s}" height="{s}" '
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
    _order(rows, edges)
    span = max((min(len(r), PER_LINE) for r in rows), default=1) * (THUMB + GAP)
    width = LEFT + span
    xy: dict[str, tuple[float, float]] = {}
    size: dict[str, int] = {}
    heads, y = [], TOP
    for row in rows:
        s = THUMB if len(row) <= PER_LINE else SMALL
        per_line = max(1, int(span // (s + GAP)))
        lines = [row[i : i + per_line] for i in range(0, len(row), per_line)]
        heads.append(
            f'<text class="layer" x="4" y="{y + s / 2 + 4:.0f}">{escape(row[0].layer)}'
            f"{f' ({len(row)})' if len(row) > 1 else ''}</text>"
        )
        for line in lines:
            x0 = LEFT + (span - len(line) * (s + GAP)) / 2
            for i, u in enumerate(line):
                xy[u.key] = (x0 + i * (s + GAP), y)
                size[u.key] = s
            y += s + LINE_GAP
        y += ROW_GAP - LINE_GAP
    height = y - ROW_GAP + LINE_GAP + TOP + 8

    scale = max((abs(e.weight) for e in edges if e.weight is not None), default=0.0) or 1.0
    marks = []
    for i, e in enumerate(edges):
        if e.source not in xy or e.target not in xy:
            continue
        (sx, sy), (tx, ty) = xy[e.source], xy[e.target]
        ss, ts = size[e.source], size[e.target]
        x1, y1 = sx + ss / 2, sy  # the source's top
        x2, y2 = tx + ts / 2, ty + ts  # the target's bottom
        if y1 < y2:  # a source drawn above its target: leave from its bottom to the target's top
            y1 = sy + ss
            y2 = ty
        bend = (y1 - y2) / 2
        d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - bend:.1f} {x2:.1f},{y2 + bend:.1f} {x2:.1f},{y2:.1f}"
        if e.weight is None:
            cls, stroke, wid = "edge absent", "#999", 1.5
            title = f"{_short(e.source)} → {_short(e.target)}: not in the weight graph"
        else:
            cls = "edge pos" if e.weight >= 0 else "edge neg"
            stroke = "#b2182b" if e.weight >= 0 else "#2166ac"
            wid = 0.75 + 5.25 * abs(e.weight) / scale
            title = f"{_short(e.source)} → {_short(e.target)}: weight {e.weight:+.4f}"
        if e.note:
            title += f" · {e.note}"
        data, dash = "", ' stroke-dasharray="4 3"' if e.weight is None else ""
        if e.kernel:
            data = f' data-kernel="{escape(json.dumps([[round(v, 5) for v in r] for r in e.kernel]))}"'
        marks.append(
            f'<g class="{cls}" tabindex="0" role="img" aria-label="{escape(title)}" data-edge="{i}" '
            f'data-source="{escape(e.source)}" data-target="{escape(e.target)}" data-title="{escape(title)}"{data}>'
            f'<path class="hit" d="{d}" stroke="transparent" stroke-width="{max(wid, 9):.1f}" fill="none"/>'
            f'<path d="{d}" stroke="{stroke}" stroke-width="{wid:.2f}" fill="none"{dash}/>'
            f"<title>{escape(title)}</title></g>"
        )
    pictures = []
    for u in units:
        x, y0 = xy[u.key]
        s = size[u.key]
        labels = f" · {', '.join(u.labels)}" if u.labels else ""
        name = escape(_short(u.key) + labels)
        picture = _picture(u, x, y0, s)
        pictures.append(
            f'<a class="unit" href="{escape(u.path)}" data-unit="{escape(u.key)}" aria-label="{name}">'
            f"<title>{name}</title>{picture}"
            f'<rect class="frame" x="{x:.0f}" y="{y0:.0f}" width="{s}" height="{s}" rx="3"/>'
            f'<text x="{x + s / 2:.0f}" y="{y0 + s + 11:.0f}" text-anchor="middle">'
            f"{escape(u.key.rsplit(':', 1)[1])}</text></a>"
        )
    return Markup(
        f'<svg class="diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="group" aria-label="{escape(label)}">'
        f'<g class="layers">{"".join(heads)}</g><g class="edges">{"".join(marks)}</g>'
        f'<g class="units">{"".join(pictures)}</g>'
        f'<g class="tip" visibility="hidden" aria-hidden="true"></g></svg>'
    )
