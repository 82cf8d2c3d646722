"""The limits' walk (kb.schema.limits.analyse) of fragment-doubling documents, against parsing the same document.

tests/test_api_limits.py asserts the behaviour (refused, each fragment walked once, no resolver run); the time it
takes is this script's: per document, the median of ``--repeat`` runs of graphql-core's parse (the baseline every
request pays) and of analyse, side by side in this run, and their ratio. 21-99 levels are walked (2^21-2^99
fields once expanded); 190 levels are refused by counting the fragment definitions, before any walk. No
database or server is needed.

    python bench/limits_walk.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from graphql import parse

from kb.schema.limits import analyse


def doubling(n: int) -> str:
    return f'{{ neuron(key: "InceptionV1 4c:1") {{ ...F{n} }} }} fragment F0 on Neuron {{ key }} ' + " ".join(
        f"fragment F{i} on Neuron {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)
    )


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    print(f"{'levels':>6} {'bytes':>7} {'parse ms':>9} {'analyse ms':>11} {'analyse/parse':>14}  refused because")
    for levels in (12, 21, 60, 99, 190):
        text = doubling(levels)
        document = parse(text)
        parsed = median_s(lambda text=text: parse(text), args.repeat)
        walked = median_s(lambda document=document: analyse(document), args.repeat)
        errors = analyse(document).errors
        why = "; ".join(e.message.split(" exceed")[0] for e in errors) or "allowed"
        print(
            f"{levels:>6} {len(text):>7} {parsed * 1e3:>9.2f} {walked * 1e3:>11.2f} {walked / parsed:>14.2f}  {why}",
            flush=True,
        )
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
