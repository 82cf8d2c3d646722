"""Feature-visualisation throughput: Circuit KB's renderer against plain lucent, in the same run.

Default (CPU here): N units of one googlenet layer at a fixed size and step count, rendered by
``kb.render.feature_vis.render_units`` (one batched optimisation, forward stopped at the layer, no weight
gradients, channels-last) and one unit at a time by lucent's ``render_vis`` with its defaults. Prints units/s
of both and the ratio.

    .venv/bin/python bench/render.py [--model torchvision:googlenet] [--layer inception4a] [--units 8]
                                     [--size 128] [--steps 32] [--device cpu]

``--all-units`` (for a GPU): every unit of every layer of lucent's InceptionV1 at lucent's defaults (128 px,
512 steps, upsampled to 224), batched per layer, bf16 autocast; prints wall time, units per GPU-second and the
fraction of the card's peak arithmetic reached (FLOPs counted with torch's FlopCounterMode on one step).
``--dataset-pass`` measures the dataset-examples collecting pass against the plain forward pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types


def _stub_ipython() -> None:
    """lucent's render module imports IPython.display (for notebooks) at import time; a bare GPU image may
    not have IPython, and nothing here displays anything."""
    try:
        import IPython.display  # noqa: F401  (only its presence matters)
    except ImportError:
        ipy = types.ModuleType("IPython")
        ipy.display = types.ModuleType("IPython.display")
        sys.modules["IPython"], sys.modules["IPython.display"] = ipy, ipy.display


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare(args) -> None:
    import torch

    from kb.graph import zoo
    from kb.render import feature_vis as FV
    from kb.render import lucent_adapter as A
    from kb.render import model_cache as M
    from kb.render.allocator import keep_freed_memory

    _stub_ipython()
    keep_freed_memory()  # what a worker does; lucent's loop below runs in this process and benefits as well
    arch = zoo.get(args.model)
    layer = arch.layer(args.layer)
    units = list(range(args.units))
    preprocess = "inceptionv1" if arch.source.startswith("lucent:") else "imagenet"
    torch.manual_seed(0)
    plain_model = arch.build().eval().to(args.device)
    plain_units = units[: max(1, min(len(units), args.plain_units))]
    name = layer.module.replace(".", "_")
    A.plain_render_vis(plain_model, name, 0, size=args.size, steps=2, device=args.device)
    model = M.prepare(arch.build(), args.device, bf16=args.bf16)  # as a worker prepares it
    FV.render_units(
        model,
        layer.module,
        units[:2],
        size=args.size,
        steps=2,
        preprocess=preprocess,
        device=args.device,
        autocast=args.bf16,
    )

    def timed(fn, n) -> float:
        _sync(args.device)
        t = time.perf_counter()
        fn()
        _sync(args.device)
        return n / (time.perf_counter() - t)

    plains, ourses = [], []
    for _ in range(args.rounds):  # alternate, so both see the same machine
        plains.append(
            timed(
                lambda: [
                    A.plain_render_vis(plain_model, name, u, size=args.size, steps=args.steps, device=args.device)
                    for u in plain_units
                ],
                len(plain_units),
            )
        )
        ourses.append(
            timed(
                lambda: FV.render_units(
                    model,
                    layer.module,
                    units,
                    size=args.size,
                    steps=args.steps,
                    preprocess=preprocess,
                    device=args.device,
                    autocast=args.bf16,
                ),
                len(units),
            )
        )
    plain, ours = statistics.median(plains), statistics.median(ourses)
    print(
        f"{arch.source} {args.layer}, {args.size} px, {args.steps} steps, device {args.device}"
        f"{' (bf16)' if args.bf16 else ''}; median of {args.rounds} alternating rounds"
    )
    print(
        f"plain lucent render_vis, one unit at a time ({len(plain_units)} units): {plain:8.3f} units/s  "
        f"(rounds: {', '.join(f'{r:.3f}' for r in plains)})"
    )
    print(
        f"kb renderer, {len(units)} units in one batch:                 {ours:8.3f} units/s  "
        f"(rounds: {', '.join(f'{r:.3f}' for r in ourses)})"
    )
    print(f"ratio: {ours / plain:.2f}x")
    if args.layer_slice:
        from kb.graph.extract import shapes

        layer_time(args, model, layer.module, shapes(arch.build(), arch)[layer.module][0], preprocess)
    if args.ablate:
        ablate(args, arch, layer, units, preprocess, ours)
    if args.floor:
        floor(args, model, layer.module, units, preprocess, ours, plain)


def layer_time(args, model, module_path, channels, preprocess) -> None:
    """A worker's time for the whole layer, from a slice of it: ``--layer-slice`` units rendered a device batch
    at a time (kb.render.batching), as a worker renders them; the layer's time is the slice's, scaled by its
    share of the layer's units."""
    from kb.render import feature_vis as FV
    from kb.render.batching import units_per_pass

    batch = units_per_pass(model, module_path, 224, args.device)
    units = list(range(min(args.layer_slice, channels)))
    _sync(args.device)
    t = time.perf_counter()
    FV.render_units(
        model,
        module_path,
        units,
        size=args.size,
        steps=args.steps,
        preprocess=preprocess,
        device=args.device,
        autocast=args.bf16,
        max_batch=batch,
    )
    _sync(args.device)
    dt = time.perf_counter() - t
    print(
        f"layer time: {len(units)} units in batches of {batch}: {dt:.1f} s = {len(units) / dt:.3f} units/s; "
        f"the layer's {channels} units at that rate: {dt * channels / len(units) / 60:.1f} min"
    )


def floor(args, model, module, units, preprocess, ours, plain) -> None:
    """The ratio's ceiling on this machine: one batch under torch.profiler, split into the convolutions (forward,
    and backward to the input: mkldnn's kernels) and everything else. Were everything else free, the renderer
    would run at ``ours / conv share`` units/s; that over plain lucent's rate bounds what any further work on the
    non-convolution ops can give. The profiler's per-op overhead lands on the small ops, so the ceiling is, if
    anything, high. Also prints the convolutions' arithmetic rate (FLOPs from torch's FlopCounterMode)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from kb.render import feature_vis as FV

    def batch(steps):
        FV.render_units(
            model,
            module,
            units,
            size=args.size,
            steps=steps,
            preprocess=preprocess,
            device=args.device,
            autocast=args.bf16,
        )

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        batch(args.steps)
    conv_names = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution", "aten::convolution"}
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    conv = sum(r.self_cpu_time_total for r in rows if r.key in conv_names)
    with FlopCounterMode(display=False) as counter:
        batch(1)
    conv_flops = (
        sum(n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)) * args.steps
    )
    share = conv / total
    print(
        f"floor: convolutions {share:.1%} of one batch's CPU time ({conv / 1e6:.2f} of {total / 1e6:.2f} s, "
        f"{len(units)} units x {args.steps} steps, under the profiler); their arithmetic: "
        f"{conv_flops / (conv / 1e6) / 1e9:.0f} GFLOP/s"
    )
    print(
        f"floor: were everything but the convolutions free: {ours / share:.3f} units/s, "
        f"{ours / share / plain:.2f}x plain lucent (now {ours / plain:.2f}x)"
    )


def ablate(args, arch, layer, units, preprocess, full) -> None:
    """The renderer with one speed-up taken away at a time, same units, size and steps."""
    import torch

    from kb.render import feature_vis as FV
    from kb.render import model_cache as M
    from kb.render import transforms

    def kornia_chain(x):  # lucent's own standard transforms (kornia warps)
        from lucent.optvis import transform as T

        for t in T.standard_transforms:
            x = t(x)
        return x

    variants = [
        *([("float32 instead of bf16", {"bf16": False}, {"autocast": False})] if args.bf16 else []),
        ("no model rewrites (BatchNorm kept, stock conv gradient)", {"rewrites": False}, {}),
        ("NCHW instead of channels-last", {"channels_last": False}, {"channels_last": False}),
        ("lucent's kornia transforms", {}, {"kornia": True}),
        ("one unit per optimisation", {}, {"max_batch": 1}),
    ]
    print(f"ablation (full renderer {full:.3f} units/s):")
    for name, prep, run in variants:
        torch.manual_seed(0)
        model = M.prepare(arch.build(), args.device, **{"bf16": args.bf16, **prep})
        saved = transforms.standard
        if run.pop("kornia", False):
            transforms.standard = kornia_chain
        try:
            kw = dict(size=args.size, preprocess=preprocess, device=args.device, **{"autocast": args.bf16, **run})
            FV.render_units(model, layer.module, units[:2], steps=2, **kw)
            t = time.perf_counter()
            FV.render_units(model, layer.module, units, steps=args.steps, **kw)
            rate = len(units) / (time.perf_counter() - t)
        finally:
            transforms.standard = saved
        print(f"  {name:<58} {rate:8.3f} units/s  ({rate / full:.2f} of full)")


def flops_per_unit_step(model, module_path, size, upsample, preprocess, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from kb.render import feature_vis as FV

    counter = FlopCounterMode(display=False)
    with counter:
        FV.render_units(
            model,
            module_path,
            [0],
            size=size,
            steps=1,
            upsample=upsample,
            preprocess=preprocess,
            device=device,
            autocast=False,
        )
    return float(counter.get_total_flops())


def all_units(args) -> None:
    import torch

    from kb.graph import zoo
    from kb.graph.extract import shapes
    from kb.render import feature_vis as FV
    from kb.render import model_cache as M

    torch.backends.cudnn.benchmark = True
    arch = zoo.get("lucent:inceptionv1")
    torch.manual_seed(0)
    model = arch.build()
    out_shapes = shapes(model, arch)
    model = M.prepare(model, args.device, bf16=args.bf16)  # as a GPU worker prepares it
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(
        f"device: {name}; every unit of lucent:inceptionv1, {args.size} px, {args.steps} steps, upsample 224, "
        f"batch {args.batch}, bf16 autocast {args.bf16}",
        flush=True,
    )
    total_units, total_flops, t0 = 0, 0.0, time.perf_counter()
    for spec in arch.layers:
        n = out_shapes[spec.module][0]
        per_step = flops_per_unit_step(model, spec.module, args.size, 224, "inceptionv1", args.device)
        _sync(args.device)
        t = time.perf_counter()
        for lo in range(0, n, args.batch):
            FV.render_units(
                model,
                spec.module,
                list(range(lo, min(n, lo + args.batch))),
                size=args.size,
                steps=args.steps,
                preprocess="inceptionv1",
                device=args.device,
                autocast=args.bf16,
            )
        _sync(args.device)
        dt = time.perf_counter() - t
        total_units += n
        total_flops += per_step * n * args.steps
        print(
            f"  {spec.name:<8} {n:5d} units {dt:7.1f} s  {n / dt:7.1f} units/s  "
            f"{per_step * n * args.steps / dt / 1e12:7.2f} TFLOP/s",
            flush=True,
        )
        if time.perf_counter() - t0 > args.budget_s:
            print(f"  stopping: over the {args.budget_s} s budget", flush=True)
            break
    wall = time.perf_counter() - t0
    rate = total_flops / wall / 1e12
    print(
        f"{total_units} units in {wall:.1f} s = {total_units / wall:.1f} units per GPU-second; "
        f"{total_flops / 1e15:.2f} PFLOP counted, {rate:.1f} TFLOP/s = {rate / args.peak_tflops:.1%} of "
        f"{args.peak_tflops:.0f} TFLOP/s peak"
    )


def dataset_pass(args) -> None:
    """Images/s of the collecting pass (top-k of every channel of every significant layer) against the plain
    forward pass of the same model on the same (preloaded) images."""
    import numpy as np
    import torch

    from kb.graph import zoo
    from kb.render import dataset_examples as D
    from kb.render.model_cache import prepare
    from kb.render.preprocess import preprocess_fn

    arch = zoo.get(args.model)
    torch.manual_seed(0)
    model = prepare(arch.build(), args.device)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 255, (args.batch, 224, 224, 3), dtype=np.uint8) for _ in range(args.batches)]
    stream = [(list(range(i * args.batch, (i + 1) * args.batch)), b) for i, b in enumerate(batches)]
    pre = preprocess_fn("inceptionv1" if arch.source.startswith("lucent:") else "imagenet")

    def plain():
        with torch.inference_mode():
            for _, b in stream:
                x = torch.from_numpy(b).to(args.device).permute(0, 3, 1, 2).float().div_(255)
                model(pre(x).contiguous(memory_format=torch.channels_last))
        _sync(args.device)

    modules = [s.module for s in arch.layers]
    n = args.batch * args.batches

    def collect():
        D.collect(model, modules, stream, 9, device=args.device)
        _sync(args.device)

    plain()
    D.collect(model, modules, stream[:1], 9, device=args.device)
    ps, cs = [], []
    for _ in range(args.rounds):  # alternate, so both see the same machine
        for fn, out in ((plain, ps), (collect, cs)):
            t = time.perf_counter()
            fn()
            out.append(n / (time.perf_counter() - t))
    p, c = statistics.median(ps), statistics.median(cs)
    print(
        f"{arch.source}, {n} images of 224 px in batches of {args.batch}, {len(modules)} layers, top-9, "
        f"device {args.device}; median of {args.rounds} alternating rounds"
    )
    print(f"plain forward:   {p:8.1f} images/s")
    print(f"collecting pass: {c:8.1f} images/s")
    print(f"ratio: {c / p:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="torchvision:googlenet")
    ap.add_argument("--layer", default="inception4a")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--plain-units", type=int, default=2, help="units lucent renders for its figure")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 weights and autocast; default: what a worker on this device does (kb.render.worker_device)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the medians are compared")
    ap.add_argument(
        "--layer-slice",
        type=int,
        default=0,
        help="also render this many units of the layer as a worker does and extrapolate to the whole layer",
    )
    ap.add_argument("--ablate", action="store_true", help="also time the renderer without each speed-up")
    ap.add_argument(
        "--floor", action="store_true", help="also profile one batch: the convolutions' share and the ratio's ceiling"
    )
    ap.add_argument("--all-units", action="store_true")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100/H200 SXM)")
    ap.add_argument("--dataset-pass", action="store_true")
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args()
    if args.bf16 is None:
        from kb.render.worker_device import bf16
        from kb.settings import Settings

        args.bf16 = bf16(Settings(render_device=args.device))
    if args.all_units:
        all_units(args)
    elif args.dataset_pass:
        if args.batch == 256:
            args.batch = 32
        dataset_pass(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
