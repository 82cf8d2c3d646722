"""The explore diagram's server time alone: kb.web.diagram.svg on a subgraph shaped like /explore's depth 3,
perNode 5 (1, 5, 25 and about 110 units, 155 edges, seeded), beside the same call of a baseline version of the
module read from git (default: main), run side by side in this process.

    .venv/bin/python bench/diagram_layout.py [--baseline main] [--n 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _baseline(rev: str):
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:kb/web/diagram.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="kb-bench-diagram-")) / "diagram_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("diagram_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diagram_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _subgraph(module, seed: int):
    rng = random.Random(seed)
    layers = ["mixed4c", "mixed4b", "mixed4a", "mixed3b"]
    units = [module.Unit("m/mixed4c:447", "/n/m/mixed4c/447", "mixed4c", 4)]
    edges, frontier, seen = [], [units[0]], {units[0].key}
    for depth, layer in enumerate(layers[1:], start=1):
        found = []
        for u in frontier:
            for i in rng.sample(range(480), 5):
                key = f"m/{layer}:{i}"
                edges.append(module.Edge(key, u.key, rng.uniform(-1, 1), [[rng.uniform(-1, 1)] * 3] * 3))
                if key not in seen:
                    seen.add(key)
                    found.append(module.Unit(key, f"/n/m/{layer}/{i}", layer, 4 - depth))
        units += found
        frontier = found
    return units, edges


def _time(module, n: int) -> float:
    times = []
    for i in range(n):
        units, edges = _subgraph(module, i % 20)
        t = time.perf_counter()
        module.svg(units, edges, "bench")
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="main", help="git revision of kb/web/diagram.py to compare with")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    from kb.web import diagram

    base = _baseline(args.baseline)
    _time(diagram, 20), _time(base, 20)  # warm-up
    ours, theirs = [], []
    for _ in range(3):  # interleaved rounds: both see the same machine load
        ours.append(_time(diagram, args.n // 3))
        theirs.append(_time(base, args.n // 3))
    a, b = statistics.median(ours), statistics.median(theirs)
    units, edges = _subgraph(diagram, 0)
    print(f"diagram.svg, {len(units)} units, {len(edges)} edges, median of {args.n} calls")
    print(f"this checkout   {a:7.2f} ms")
    print(f"{args.baseline:15} {b:7.2f} ms")
    print(f"ratio           {a / b:7.2f}")


if __name__ == "__main__":
    main()
