"""Where a CPU feature-visualisation batch spends its time at the thumbnail preset, and what the candidate
speed-ups give, each against the renderer as it is, alternating in the same run (a shared machine: the ratio of
neighbouring rounds is the figure; ``uptime`` printed at the start and the end).

    .venv/bin/python bench/render_profile_cpu.py [--layer inception4a] [--units 8] [--size 64] [--steps 16]
                                                 [--rounds 3] [--profile] [--variants threads1,compile,...]

``--profile``: torch.profiler's table of one batch (self CPU time by operator). Variants:

- ``threads1``: torch.set_num_threads(1) (against the default, one per core);
- ``batch16``: 16 units per optimisation instead of 8 (the worker's CPU device batch);
- ``compile``: each top-level child of the model under torch.compile (inductor), compile time reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import torch


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    from kb.graph import zoo
    from kb.render import feature_vis as FV
    from kb.render import model_cache as M

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="torchvision:googlenet")
    ap.add_argument("--layer", default="inception4a")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--variants", default="threads1,batch16")
    args = ap.parse_args()
    print(f"# {uptime()}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}")
    arch = zoo.get(args.model)
    module = arch.layer(args.layer).module
    preprocess = "inceptionv1" if arch.source.startswith("lucent:") else "imagenet"
    torch.manual_seed(0)
    model = M.prepare(arch.build(), "cpu", bf16=False)
    kw = {"size": args.size, "preprocess": preprocess, "device": "cpu", "autocast": False}

    def run(units, steps, m=model, max_batch=0):
        return FV.render_units(m, module, units, steps=steps, max_batch=max_batch, **kw)

    units = list(range(args.units))
    run(units[:2], 2)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(units, 4)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    def rate(fn, n) -> float:
        t = time.perf_counter()
        fn()
        return n / (time.perf_counter() - t)

    for variant in [v for v in args.variants.split(",") if v]:
        compare(variant, args, arch, module, run, rate)
    print(f"# {uptime()}  pid {os.getpid()}")


def compare(variant, args, arch, module, run, rate) -> None:
    """The variant against the renderer as it is, in alternating rounds; prints both medians and their ratio."""
    from kb.render import model_cache as M

    units = list(range(args.units))
    setup = teardown = None
    if variant == "threads1":
        threads = torch.get_num_threads()

        def setup():
            torch.set_num_threads(1)

        def teardown():
            torch.set_num_threads(threads)

        def fn():
            return run(units, args.steps)

    elif variant == "batch16":
        units = list(range(2 * args.units))

        def fn():
            return run(units, args.steps, max_batch=2 * args.units)

    elif variant == "compile":
        # each top-level child compiled on its own (inductor): the forward stays the model's, so the hook that
        # stops it at the layer works as before; a copy, so the "as is" rounds stay eager
        torch.manual_seed(0)
        compiled = M.prepare(arch.build(), "cpu", bf16=False)
        for child in compiled.children():
            child.compile(dynamic=False)
        t = time.perf_counter()
        run(units, 2, m=compiled)
        print(f"  compile (first 2 steps): {time.perf_counter() - t:.1f} s", flush=True)

        def fn():
            return run(units, args.steps, m=compiled)

    else:
        raise SystemExit(f"unknown variant {variant}")
    bases, tries = [], []
    for _ in range(args.rounds):
        bases.append(rate(lambda: run(units, args.steps, max_batch=args.units), len(units)))
        if setup:
            setup()
        try:
            tries.append(rate(fn, len(units)))
        finally:
            if teardown:
                teardown()
    b, v = statistics.median(bases), statistics.median(tries)
    print(
        f"{variant:<10} as is {b:6.3f} units/s (rounds {', '.join(f'{r:.3f}' for r in bases)}); "
        f"variant {v:6.3f} units/s (rounds {', '.join(f'{r:.3f}' for r in tries)}); ratio {v / b:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
