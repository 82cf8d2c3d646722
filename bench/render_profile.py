"""Where a batched feature-visualisation step spends its time (for a GPU): variants and a profiler table.

python bench/render_profile.py --device cuda --layer mixed4c --batch 512 --steps 8
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from kb.graph import zoo
    from kb.render import feature_vis as FV
    from kb.render import model_cache as M

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layer", default="mixed4c")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    arch = zoo.get("lucent:inceptionv1")
    variants = [
        ("fp32 NCHW", {"channels_last": False, "autocast": False}),
        ("fp32 channels-last", {"channels_last": True, "autocast": False}),
        ("bf16 NCHW", {"channels_last": False, "autocast": True}),
        ("bf16 channels-last", {"channels_last": True, "autocast": True}),
        ("bf16 weights cast once, channels-last", {"channels_last": True, "autocast": True, "bf16": True}),
        ("bf16 channels-last, no transforms", {"channels_last": True, "autocast": True, "transforms": "none"}),
        ("bf16 channels-last, no upsample", {"channels_last": True, "autocast": True, "upsample": 0}),
    ]
    from kb.graph.extract import shapes

    channels = shapes(arch.build(), arch)[arch.layer(args.layer).module][0]
    units = [i % channels for i in range(args.batch)]  # a batch may hold a unit more than once
    for name, kw in variants:
        torch.manual_seed(0)
        kw = dict(kw)
        model = M.prepare(
            arch.build(), args.device, channels_last=kw.get("channels_last", True), bf16=kw.pop("bf16", False)
        )
        run = dict(size=128, preprocess="inceptionv1", device=args.device, **kw)
        FV.render_units(model, args.layer, units, steps=2, **run)
        torch.cuda.synchronize()
        t = time.perf_counter()
        FV.render_units(model, args.layer, units, steps=args.steps, **run)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / args.steps
        print(f"{name:<36} {dt * 1000:8.1f} ms/step  {args.batch / dt:8.0f} unit-steps/s", flush=True)
    model = M.prepare(arch.build(), args.device, bf16=True)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as prof:
        FV.render_units(
            model, args.layer, units, steps=3, size=128, preprocess="inceptionv1", device=args.device, autocast=True
        )
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=48))


if __name__ == "__main__":
    main()
