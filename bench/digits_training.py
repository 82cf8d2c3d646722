"""demo:digits' training time and held-out accuracy (kb.graph.zoo.digits_training), against its budget of 60 s on
this CPU and 0.95: each seed trained ``--repeats`` times in this process (the same seed must give the same sha256
every time), beside the machine's load average. Usage:

    python bench/digits_training.py [--seeds 0 1 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os

from kb.graph.weights import state_dict_sha256
from kb.graph.zoo.digits_training import RECIPE, train

BUDGET_S, FLOOR = 60.0, 0.95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"recipe {RECIPE.name} ({RECIPE.sha256()[:12]}): {RECIPE.describe()}")
    print(f"budget: {BUDGET_S:.0f} s, accuracy >= {FLOOR}; {os.cpu_count()} CPUs")
    for seed in args.seeds:
        hashes = set()
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            done = train(seed, RECIPE)
            sha = state_dict_sha256(done.model.state_dict())
            hashes.add(sha)
            print(
                f"seed {seed} run {r + 1}: {done.seconds:5.1f} s ({done.seconds / BUDGET_S:.2f} of the budget), "
                f"held-out accuracy {done.accuracy:.4f}, sha256 {sha[:12]}, load before {load:.2f}",
                flush=True,
            )
        print(
            f"seed {seed}: {'one set of weights' if len(hashes) == 1 else 'DIFFERENT WEIGHTS'} in {args.repeats} runs"
        )


if __name__ == "__main__":
    main()
