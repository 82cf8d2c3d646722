"""Small pictures drawn on the server as inline SVG: weight kernels as red/blue heatmaps (the Circuits thread's
convention: white at zero, red excitatory, blue inhibitory, one symmetric scale per figure) and weight bars.

Numbers in, markup out; no text from the database goes into these pictures except through ``escape``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

RED = (178, 24, 43)
BLUE = (33, 102, 172)


LEVELS = 48  # colour steps on each side of zero: finer than the eye tells apart in a 5 px cell


def _ramp(end: tuple[int, int, int]) -> list[str]:
    out = []
    for i in range(LEVELS + 1):
        t = i / LEVELS
        r, g, b = (round(255 + (c - 255) * t) for c in end)
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return out


_REDS, _BLUES = _ramp(RED), _ramp(BLUE)


def colour(value: float, scale: float) -> str:
    """White at zero, RED at +scale, BLUE at -scale (linear in between, in LEVELS steps, clipped)."""
    step = min(LEVELS, round(abs(value) / scale * LEVELS)) if scale > 0 else 0
    return (_REDS if value >= 0 else _BLUES)[step]


def kernel_scale(kernels: Sequence[Sequence[Sequence[float]]]) -> float:
    """The symmetric scale shared by a row of kernels: the largest |value| among them."""
    return max((abs(v) for k in kernels for row in k for v in row), default=0.0)


def kernel_svg(kernel: Sequence[Sequence[float]], scale: float, size: int = 42, label: str = "") -> Markup:
    """One kernel as a grid of rects, ``size`` pixels on its longer side (cells at least 2 px)."""
    h, w = len(kernel), max((len(r) for r in kernel), default=0)
    if not h or not w:
        return Markup("")
    cell = max(2, size // max(h, w))
    rects = "".join(
        f'<rect x="{x * cell}" y="{y * cell}" width="{cell}" height="{cell}" fill="{colour(v, scale)}"/>'
        for y, row in enumerate(kernel)
        for x, v in enumerate(row)
    )
    title = escape(label or f"{h}x{w} kernel")
    return Markup(
        f'<svg class="kernel" width="{w * cell}" height="{h * cell}" viewBox="0 0 {w * cell} {h * cell}" '
        f'role="img" aria-label="{title}"><title>{title}</title>{rects}'
        f'<rect width="{w * cell}" height="{h * cell}" fill="none" stroke="#bbb" stroke-width="1"/></svg>'
    )


def weight_bar(weight: float, scale: float, width: int = 72, height: int = 8) -> Markup:
    """A bar as long as |weight| / scale, red when excitatory, blue when inhibitory."""
    frac = min(1.0, abs(weight) / scale) if scale > 0 else 0.0
    fill = "#b2182b" if weight >= 0 else "#2166ac"
    return Markup(
        f'<svg class="bar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-hidden="true">'
        f'<rect width="{width}" height="{height}" fill="#eee"/>'
        f'<rect width="{max(1.0, frac * width):.1f}" height="{height}" fill="{fill}"/></svg>'
    )
