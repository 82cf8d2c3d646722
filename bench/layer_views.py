"""A layer's deep dream: Circuit KB's renderer (kb.render.layer_views) against plain lucent, in the same run.

Both optimise lucent-style ``deepdream(layer)`` (the layer's mean squared activation) from noise at the same size
and step count, with lucent's recipe (FFT parameterisation, decorrelated colour, standard transforms, upsampled
to 224 px): lucent's ``render_vis`` on the model as built, and ``render_layer_view`` on the model as a worker
prepares it (forward stopped at the layer, no weight gradients, channels-last, BatchNorm folded). Prints seconds
per image of both, alternating rounds, and the ratio; then each one's objective on its own image (a speed-up
that optimised less would show here).

    .venv/bin/python bench/layer_views.py [--model lucent:inceptionv1] [--layer mixed4a] [--size 128]
                                          [--steps 16] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lucent:inceptionv1")
    ap.add_argument("--layer", default="mixed4a")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from bench.render import _stub_ipython, _sync
    from kb.graph import zoo
    from kb.render import layer_views as LV
    from kb.render import lucent_adapter as A
    from kb.render import model_cache as M
    from kb.render.allocator import keep_freed_memory

    _stub_ipython()
    keep_freed_memory()
    arch = zoo.get(args.model)
    layer = arch.layer(args.layer)
    preprocess = "inceptionv1" if arch.source.startswith("lucent:") else "imagenet"
    torch.manual_seed(0)
    plain_model = arch.build().eval().to(args.device)
    name = layer.module.replace(".", "_")
    torch.manual_seed(0)
    model = M.prepare(arch.build(), args.device)

    def plain():
        return A.plain_render_deepdream(plain_model, name, size=args.size, steps=args.steps, device=args.device)

    def ours():
        return LV.render_layer_view(
            model,
            layer.module,
            "DEEPDREAM",
            size=args.size,
            steps=args.steps,
            preprocess=preprocess,
            device=args.device,
        )

    def timed(fn):
        _sync(args.device)
        t = time.perf_counter()
        image = fn()
        _sync(args.device)
        return time.perf_counter() - t, image

    timed(lambda: A.plain_render_deepdream(plain_model, name, size=args.size, steps=2, device=args.device))
    timed(lambda: LV.render_layer_view(model, layer.module, "DEEPDREAM", size=args.size, steps=2, device=args.device))
    plains, ourses = [], []
    for _ in range(args.rounds):  # alternate, so both see the same machine
        s, plain_image = timed(plain)
        plains.append(s)
        s, our_image = timed(ours)
        ourses.append(s)
    p, o = statistics.median(plains), statistics.median(ourses)
    print(
        f"{arch.source} {args.layer} deep dream, {args.size} px, {args.steps} steps, device {args.device}; "
        f"median of {args.rounds} alternating rounds"
    )
    print(f"plain lucent render_vis:  {p:8.3f} s/image  (rounds: {', '.join(f'{r:.3f}' for r in plains)})")
    print(f"kb render_layer_view:     {o:8.3f} s/image  (rounds: {', '.join(f'{r:.3f}' for r in ourses)})")
    print(f"ratio: {p / o:.2f}x")
    acts = LV.layer_activations(
        model, layer.module, [plain_image, our_image], upsample=224, preprocess=preprocess, device=args.device
    )
    plain_obj, our_obj = (acts**2).mean(dim=(1, 2, 3)).tolist()
    start = LV.layer_activations(
        model,
        layer.module,
        [(LV.start_image(args.size, 0)[1]()[0].detach().permute(1, 2, 0).cpu().numpy() * 255).astype("uint8")],
        upsample=224,
        preprocess=preprocess,
        device=args.device,
    )
    print(
        f"objective (mean squared activation, on each one's final image, the prepared model): start "
        f"{(start**2).mean().item():.4g}, plain lucent {plain_obj:.4g}, kb {our_obj:.4g}"
    )


if __name__ == "__main__":
    main()
