"""Link programs of the zoo: the hand-written trunks (``kb.graph.extract``) against tracing (``kb.graph.traced``).

Both build the same programs (``tests/test_traced.py`` checks it); this measures what each costs, in the same
process on the same model, alternating, best of ``--repeat``: ``links`` (trace, one forward pass, the walk) and the
full expansion of every edge's weight and magnitude (what an import computes), whose terms may differ in shape.

    .venv/bin/python bench/traced_links.py [--models lucent:inceptionv1,torchvision:resnet50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from kb.graph import extract, zoo


def _expand(programs: list[extract.Link]) -> int:
    n = 0
    for link in programs:
        for rows, _, _ in link.program.expand():
            n += len(rows)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.sources()))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--expand", action="store_true", help="also time the full expansion of every edge")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads 1")
    print(f"{'model':28} {'hand links s':>12} {'traced links s':>14} {'ratio':>6}", end="")
    print(f" {'hand expand s':>13} {'traced expand s':>15} {'ratio':>6}" if args.expand else "")
    for source in args.models.split(","):
        arch = zoo.get(source)
        torch.manual_seed(0)
        model = arch.build().eval()
        bare = dataclasses.replace(arch, trunk=())
        best = dict.fromkeys(("hand", "traced", "hand expand", "traced expand"), float("inf"))
        for _ in range(args.repeat):
            for name, a in (("hand", arch), ("traced", bare)):
                t = time.perf_counter()
                _, programs = extract.links(model, a)  # an empty trunk is traced
                best[name] = min(best[name], time.perf_counter() - t)
                if args.expand:
                    t = time.perf_counter()
                    _expand(programs)
                    best[f"{name} expand"] = min(best[f"{name} expand"], time.perf_counter() - t)
                del programs
        line = f"{source:28} {best['hand']:12.2f} {best['traced']:14.2f} {best['traced'] / best['hand']:6.2f}"
        if args.expand:
            he, te = best["hand expand"], best["traced expand"]
            line += f" {he:13.2f} {te:15.2f} {te / he:6.2f}"
        print(line, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
