"""Any model (issue 26): import many torchvision and timm CNNs with seeded random weights, one `kb import` process
each (a per-model timeout), into one fresh database; for each print the import's time, its connections, the
process's peak RSS, the time and RSS per million connections, and the oracle check: sampled units' stored
weights and magnitudes against autograd through the real, linearised modules (tests/jacobian.py). A model that is
refused (an op with no rule, a failed forward pass, the timeout) is listed with the one line it was refused with.
The zoo's ResNet50 runs first, as the baseline of the same run. Usage:

    python bench/zoo_sweep.py [--database postgresql|sqlite] [--timeout 600] [--models SOURCE ...] [--units 2]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "bench"))
sys.path.insert(0, str(HERE / "tests"))

from import_graph import fresh_database, settle, uptime  # noqa: E402

from kb.db import migrate  # noqa: E402
from kb.db.engine import make_engine  # noqa: E402

BASELINE = "torchvision:resnet50"  # declared in the zoo: today's hand-written links
TORCHVISION = [  # smallest first: on a busy machine the sweep's later (larger) models are the ones a timeout cuts
    "resnet18",
    "squeezenet1_1",
    "squeezenet1_0",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "mnasnet0_5",
    "mnasnet0_75",
    "mnasnet1_0",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_b1",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "regnet_x_800mf",
    "regnet_y_800mf",
    "densenet121",
    "resnet34",
    "googlenet",
    "alexnet",
    "convnext_tiny",
    "resnext50_32x4d",
    "vgg11",
    "resnet101",
]
TIMM = [
    "resnet10t",
    "mobilenetv3_small_050",
    "regnetx_002",
    "regnety_002",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "ghostnet_100",
    "convnext_atto",
    "resnet18",
    "resnet26d",
    "seresnext26d_32x4d",
    "dla34",
]
_IMPORTED = re.compile(
    r"(\d+) layers, (\d+) units, (\d+) connections in ([\d.]+)s \(weights ([\d.]+)s, write ([\d.]+)s\)"
)


def key_of(source: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", source.lower()).strip("-")[:64]


def kb_import(url: str, data_dir: str, source: str, timeout: float) -> dict:
    """One `kb import` process: its report, wall time and peak RSS (os.wait4: this child's own), or why it failed."""
    env = {**os.environ, "KB_DATABASE_URL": url, "KB_DATA_DIR": data_dir, "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "kb", "import", source, "--weights", "random", "--seed", "0", "--key", key_of(source)]
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=HERE, start_new_session=True)
        deadline = t + timeout
        status, rusage = 0, None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)
                _, status, rusage = os.wait4(proc.pid, 0)
                return {"refused": f"timeout after {timeout:.0f} s", "rss_mb": rusage.ru_maxrss / 1024}
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    rss = rusage.ru_maxrss / 1024
    m = _IMPORTED.search(stdout)
    if proc.returncode or not m:
        lines = [line for line in stderr.splitlines() if line.startswith("error:")] or stderr.strip().splitlines()[-1:]
        return {"refused": (lines[0] if lines else f"exit {proc.returncode}")[:300], "rss_mb": rss}
    layers, units, rows, total, weights, write = m.groups()
    return {
        "layers": int(layers),
        "units": int(units),
        "rows": int(rows),
        "total": float(total),
        "weights": float(weights),
        "write": float(write),
        "process": wall,
        "rss_mb": rss,
    }


def oracle(engine: sa.Engine, source: str, units: int) -> str:
    """Sampled target units (first link, middle, last; ``units`` each) against the linearised Jacobian: the largest
    error of weight and magnitude, relative to the largest |weight| of the unit's inputs."""
    from jacobian import jacobian

    from kb.graph import zoo
    from kb.graph.weights import reload

    key = key_of(source)
    with engine.connect() as conn:
        weights = conn.execute(sa.text("SELECT weights FROM model WHERE key = :k"), {"k": key}).scalar_one()
        layers = [
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT l.key FROM layer l JOIN model m ON m.id = l.model_id WHERE m.key = :k ORDER BY position"
                ),
                {"k": key},
            )
        ]
    arch = zoo.get(source)
    model = reload(arch, weights)
    worst, checked = 0.0, 0
    for target_layer in dict.fromkeys([layers[1], layers[len(layers) // 2], layers[-1]]):
        with engine.connect() as conn:
            n = conn.execute(
                sa.text(
                    "SELECT l.units FROM layer l JOIN model m ON m.id = l.model_id WHERE m.key = :k AND l.key = :l"
                ),
                {"k": key, "l": target_layer},
            ).scalar_one()
        for unit in np.linspace(0, n - 1, units + 2).round().astype(int)[1:-1]:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        """SELECT sl.key, s."index", c.weight, c.magnitude FROM connection c
                        JOIN neuron t ON t.id = c.target_id JOIN layer tl ON tl.id = t.layer_id
                        JOIN neuron s ON s.id = c.source_id JOIN layer sl ON sl.id = s.layer_id
                        JOIN model m ON m.id = tl.model_id
                        WHERE m.key = :k AND tl.key = :l AND t."index" = :u"""
                    ),
                    {"k": key, "l": target_layer, "u": int(unit)},
                ).all()
            source_layer = rows[0][0]
            channels, size = arch.input_shape[0], arch.input_shape[1]
            args = (model, arch.layer(source_layer).module, arch.layer(target_layer).module, int(unit), size)
            grad, _ = jacobian(*args) if channels == 3 else jacobian(*args, channels)
            g = grad.numpy().reshape(grad.shape[0], -1)
            w = np.zeros(g.shape[0])
            mag = np.zeros(g.shape[0])
            for _, i, wt, mg in rows:
                w[i], mag[i] = wt, mg
            scale = max(np.abs(g.sum(axis=1)).max(), 1e-12)
            err = max(np.abs(w - g.sum(axis=1)).max(), np.abs(mag - np.linalg.norm(g, axis=1)).max()) / scale
            worst, checked = max(worst, err), checked + 1
    del model
    verdict = "ok" if worst < 1e-3 else "MISMATCH"
    return f"{verdict} {checked} units, max rel err {worst:.1e}"


def _interleave(a: list[str], b: list[str]) -> list[str]:
    """torchvision's and timm's in turn, so that a sweep cut short has some of each."""
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", default="postgresql", choices=["postgresql", "sqlite"])
    ap.add_argument("--timeout", type=float, default=600, help="seconds per import before it is refused")
    ap.add_argument("--units", type=int, default=2, help="sampled target units per checked layer")
    ap.add_argument("--models", nargs="*", help="sources (default: 25 torchvision and 12 timm CNNs, after resnet50)")
    ap.add_argument("--no-baseline", action="store_true", help=f"without {BASELINE} first")
    args = ap.parse_args()
    tv, tm = [f"torchvision:{n}" for n in TORCHVISION], [f"timm:{n}" for n in TIMM]
    sources = args.models or [*([] if args.no_baseline else [BASELINE]), *_interleave(tv, tm)]
    url, drop = fresh_database(args.database)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the database is dropped on the way out (finally)
    data_dir = tempfile.mkdtemp(prefix="kb-sweep-")
    print(f"load average (1, 5, 15 min) at start: {uptime()}; {os.cpu_count()} CPUs; database {args.database}")
    print(
        f"{'source':<36} {'layers':>6} {'units':>6} {'connections':>12} {'import s':>8} {'process s':>9} "
        f"{'peak MB':>8} {'s/M conn':>8} {'MB/M conn':>9}  oracle",
        flush=True,
    )
    done, refused = [], []
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        for source in sources:
            settle(engine)
            r = kb_import(url, data_dir, source, args.timeout)
            if "refused" in r:
                refused.append((source, r["refused"]))
                print(f"{source:<36} refused: {r['refused']}", flush=True)
                continue
            try:
                check = oracle(engine, source, args.units)
            except Exception as exc:  # the sweep goes on; the line says why this check could not run
                check = f"oracle failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            mconn = r["rows"] / 1e6
            done.append((source, r, check))
            print(
                f"{source:<36} {r['layers']:>6} {r['units']:>6} {r['rows']:>12,} {r['total']:>8.1f} "
                f"{r['process']:>9.1f} {r['rss_mb']:>8.0f} {r['total'] / mconn:>8.1f} {r['rss_mb'] / mconn:>9.0f}  "
                f"{check}",
                flush=True,
            )
    finally:
        drop()
    print(f"\nimported {len(done)}, refused {len(refused)}; load average at end: {uptime()}")
    ok = sum(1 for _, _, c in done if c.startswith("ok"))
    print(f"oracle: {ok} of {len(done)} imported models match autograd on every sampled unit")
    big = [(s, r) for s, r, _ in done if r["rows"] >= 1_000_000]
    if big:
        secs = [r["total"] / (r["rows"] / 1e6) for _, r in big]
        print(
            f"models of 1 M connections or more ({len(big)}): import {np.median(secs):.1f} s per M connections "
            f"(median; {min(secs):.1f}-{max(secs):.1f}), peak RSS {max(r['rss_mb'] for _, r in big):.0f} MB at most"
        )
    for source, reason in refused:
        print(f"refused {source}: {reason}")


if __name__ == "__main__":
    main()
