"""A circuit check's cost on the CPU (kb.experiments.measure): a 3-edge InceptionV1 circuit (lucent:inceptionv1,
seeded random weights, as a worker prepares it), 256 noise images at 224 px, every measure with 10 random draws
(m(M), m(∅), f(C), necessity, the random baseline of both, each edge's own effect): 27 conditions of one target.

Prints the whole check's seconds (the goal: at most 60 s here), split into the source pass (the images up to the
source layer, once) and the conditions (from the source layer to the target layer, batched); then how it scales
with the number of edges and images (smaller runs), and the naive way beside it in the same run: every condition
a full forward pass from the image with a hook ablating the source layer (no reuse, no early stop), timed on a few
conditions and scaled to the check's count.

    .venv/bin/python bench/circuit_check.py [--images 256] [--edges 3] [--source mixed4b] [--target mixed4c]
                                            [--unit 447] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--source", default="mixed4b")
    ap.add_argument("--target", default="mixed4c")
    ap.add_argument("--unit", type=int, default=-1, help="the target unit (-1: the most active on the first images)")
    ap.add_argument("--whole", action="store_true", help="run the target's block whole (no kb.experiments.narrow)")
    ap.add_argument("--ablation", default="mean")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-scaling", action="store_true")
    args = ap.parse_args()

    import torch

    from kb.experiments import measure
    from kb.experiments.narrow import narrowed
    from kb.graph import zoo
    from kb.graph.weights import load
    from kb.render.model_cache import prepare
    from kb.render.preprocess import preprocess_fn

    if args.threads:
        torch.set_num_threads(args.threads)
    arch = zoo.get("lucent:inceptionv1")
    model = prepare(load(arch, "random", 0)[0], "cpu")
    source = model.get_submodule(arch.layer(args.source).module)
    target = model.get_submodule(arch.layer(args.target).module)
    sources = [373, 237, 1, 2, 3, 4, 5, 6, 7, 8][: args.edges]
    unit = args.unit
    if unit < 0:  # random weights leave many units silent on noise: the one most active on a few images
        got = []
        with torch.no_grad():
            from kb.render.hooks import forward_hooks, run_until_stop, stop_at

            g = torch.Generator().manual_seed(1)
            with forward_hooks([stop_at(target, got.append)]):
                run_until_stop(model, preprocess_fn("inceptionv1")(torch.rand(4, 3, 224, 224, generator=g)))
        unit = int(got[0].flatten(2).mean(2).mean(0).argmax())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {_load()}")
    print(f"circuit: {len(sources)} edges {args.source}:{sources} -> {args.target}:{unit}; {args.ablation} ablation")

    def images(n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return preprocess_fn("inceptionv1")(torch.rand(n, 3, 224, 224, generator=g))

    def run(n: int, edges: int) -> tuple[float, float, int, dict]:
        x = images(n)
        t0 = time.perf_counter()
        acts = measure.source_activations(model, source, x, args.batch)
        t1 = time.perf_counter()
        narrow = None if args.whole else (lambda units, probe: narrowed(model, arch, args.target, units, probe))
        [f] = measure.check(
            model,
            source,
            target,
            x,
            {unit: sources[:edges]},
            args.ablation,
            batch=args.batch,
            acts=acts,
            narrow=narrow,
        )
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, 4 + 2 * 10 + edges, f

    pass_s, cond_s, conditions, f = run(args.images, args.edges)
    total = pass_s + cond_s
    print(
        f"\ncheck: {total:.1f} s for {args.images} images x {conditions} conditions "
        f"(source pass {pass_s:.1f} s, conditions {cond_s:.1f} s = {cond_s / (args.images * conditions) * 1e3:.2f} ms "
        f"per image-condition); goal <= 60 s: {'met' if total <= 60 else 'NOT met'}; load {_load()}"
    )
    print(
        f"figures: m(M) {f['m_full']:.4f}  m(∅) {f['m_empty']:.4f}  sufficiency {_f(f['sufficiency'])}  "
        f"necessity {_f(f['necessity'])}  random {_f(f['random']['sufficiency']['mean'])} ± "
        f"{_f(f['random']['sufficiency']['std'])}"
    )

    # the naive way: each condition a full forward from the image, ablating by a hook; timed on 3 conditions
    few = min(args.images, 64)
    x = images(few)
    acts = measure.source_activations(model, source, x, args.batch)
    repl = measure.replacements(acts, args.ablation, 0)
    naive_conditions = [measure.FULL, measure.EMPTY, measure.Condition(True, frozenset(sources[: args.edges]))]
    t0 = time.perf_counter()
    with torch.no_grad():
        for cond in naive_conditions:
            mask = cond.mask(acts.shape[1])[None, :, None, None]
            for lo in range(0, few, args.batch):
                r = repl if repl.shape[0] == 1 else repl[lo : lo + args.batch]

                def ablate(_m, _i, out, r=r, mask=mask):
                    return torch.where(mask, out, r)

                handle = source.register_forward_hook(ablate)
                try:
                    model(x[lo : lo + args.batch])
                finally:
                    handle.remove()
    naive = (time.perf_counter() - t0) / (len(naive_conditions) * few) * args.images * conditions
    print(
        f"naive (full forward per condition, scaled from {len(naive_conditions)} conditions x {few} images): "
        f"{naive:.1f} s; the check is {naive / total:.1f}x faster"
    )

    if args.no_scaling:
        return
    print("\nscaling (seconds: source pass + conditions):")
    for n, e in ((64, 1), (64, 3), (64, 6), (128, 3), (256, 1)):
        p, c, k, _ = run(n, e)
        print(
            f"  {n:4d} images, {e} edges ({k:2d} conditions): {p + c:6.1f} s = {p:5.1f} + {c:5.1f}"
            f"  ({c / (n * k) * 1e3:.2f} ms per image-condition)"
        )
    print(f"load {_load()}")


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
