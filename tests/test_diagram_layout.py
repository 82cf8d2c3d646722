"""The explore and circuit diagrams' layout (kb.web.diagram) without a server: a subgraph as wide as /explore's
depth 3 and perNode 5 (1, 5, 25 and about 110 units) stays readable (issue 24 item 7: mixed3b wrapped into 6
rows, edges crossed the boxes and hid the labels)."""

import itertools
import random
import re

from kb.web import diagram

LAYERS = ["mixed4c", "mixed4b", "mixed4a", "mixed3b"]


def _subgraph(seed: int = 0, per_node: int = 5):
    """Upstream from one unit: each unit's per_node inputs in the layer below, with repeats as real ones have."""
    rng = random.Random(seed)
    units = [diagram.Unit("m/mixed4c:447", "/n/m/mixed4c/447", "mixed4c", 4)]
    edges, frontier, seen = [], [units[0]], {units[0].key}
    for depth, layer in enumerate(LAYERS[1:], start=1):
        found = []
        for u in frontier:
            for i in rng.sample(range(480), per_node):
                key = f"m/{layer}:{i}"
                edges.append(diagram.Edge(key, u.key, rng.uniform(-1, 1)))
                if key not in seen:
                    seen.add(key)
                    found.append(diagram.Unit(key, f"/n/m/{layer}/{i}", layer, 4 - depth))
        units += found
        frontier = found
    return units, edges


def _rows(units):
    by = {}
    for u in units:
        by.setdefault(u.position, []).append(u)
    return [by[p] for p in sorted(by, reverse=True)]


def _crossings(rows, edges, x):
    """Pairs of edges between the same two rows whose ends are in opposite orders."""
    row_of = {u.key: r for r, row in enumerate(rows) for u in row}
    total = 0
    for r in range(len(rows) - 1):
        pairs = [(x[e.target], x[e.source]) for e in edges if row_of[e.target] == r and row_of[e.source] == r + 1]
        total += sum(1 for i, a in enumerate(pairs) for b in pairs[i + 1 :] if (a[0] - b[0]) * (a[1] - b[1]) < 0)
    return total


def test_ordering_by_barycentre_cuts_crossings():
    units, edges = _subgraph()
    by_index = _rows(units)
    for row in by_index:
        row.sort(key=lambda u: int(u.key.rsplit(":", 1)[1]))
    before = _crossings(by_index, edges, {u.key: i for row in by_index for i, u in enumerate(row)})
    rows = _rows(units)
    diagram.order(rows, edges)
    after = _crossings(rows, edges, {u.key: i for row in rows for i, u in enumerate(row)})
    assert after < 0.6 * before, (before, after)


def test_a_wide_layer_is_a_few_interleaved_lines_that_keep_its_order():
    units, edges = _subgraph()
    rows = _rows(units)
    assert [len(r) for r in rows][:3] == [1, 5, 25] and len(rows[3]) > 100
    diagram.order(rows, edges)
    places, _, width, _ = diagram.layout(rows)
    assert width <= diagram.WIDTH + 4  # fits the page: not scaled down, not scrolled
    for row in rows:
        p = [places[u.key] for u in row]
        lines = {q.line for q in p}
        assert len(lines) <= 4, f"{row[0].layer}: {len(lines)} lines"
        assert all(a.x < b.x for a, b in itertools.pairwise(p))  # the order, left to right
        for line in lines:  # tiles of one line never touch
            xs = sorted(q.x for q in p if q.line == line)
            assert all(b - a >= p[0].size + 8 for a, b in itertools.pairwise(xs))
    assert len({places[u.key].line for u in rows[2]}) == 1  # 25 units: one line of smaller tiles
    assert min(places[u.key].size for u in units) >= 30


def test_edges_are_under_the_tiles_and_numbers_sit_on_their_tiles():
    units, edges = _subgraph(seed=1)
    text = str(diagram.svg(units, edges, "test"))
    assert text.index('<g class="edges">') < text.index('<g class="units">')  # drawn first: under the tiles
    assert text.count('<a class="unit"') == len(units) and text.count('<g class="edge ') == len(edges)
    for unit in re.findall(r'<a class="unit".*?</a>', text):
        frame = re.search(r'class="frame" x="([\d.]+)" y="([\d.]+)" width="(\d+)"', unit)
        x, y, s = float(frame[1]), float(frame[2]), int(frame[3])
        label = re.search(r'class="label" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="(\d+)"', unit)
        lx, ly, lw, lh = (float(v) for v in label.groups())
        assert x <= lx and lx + lw <= x + s and y <= ly and ly + lh <= y + s  # inside the tile: no edge reaches
        number = re.search(r'<text x="([\d.]+)" y="([\d.]+)"[^>]*>(\d+)</text>', unit)
        assert x <= float(number[1]) <= x + s and ly <= float(number[2]) <= ly + lh
    # every edge runs straight up through its rows (L) and curves only between them (C)
    assert all(re.fullmatch(r"M[\d.,]+ L[\d.,]+ C[\d., ]+ L[\d.,]+", d) for d in re.findall(r'<path d="([^"]+)"', text))
    # an edge straight up (a unit right under its only target) still has a box to point at and click
    hits = re.findall(r'<path class="hit" d="([^"]+)"', text)
    assert len(hits) == len(edges) and all(h.endswith(" h9") for h in hits)


def test_a_long_layer_name_gets_its_column_and_the_units_keep_to_the_page():
    units, edges = _subgraph(seed=2)
    for u in units:
        u.layer = "features.denseblock3.denselayer24.conv2" if u.position == 1 else u.layer
    rows = _rows(units)
    diagram.order(rows, edges)
    places, _, width, _ = diagram.layout(rows)
    name = 12 + diagram.NAME_PX * len("features.denseblock3.denselayer24.conv2")
    assert min(p.x for p in places.values()) >= name - 1  # no tile over the names
    assert width <= diagram.WIDTH + 4
    text = str(diagram.svg(units, edges, "test"))
    assert re.search(r'<tspan class="count" x="4" dy="14">1\d\d units</tspan>', text)  # the count under the name
