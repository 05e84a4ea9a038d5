"""Does training a sweep's points of one width together pay? (issue "Show that hyperparameters transfer")

``paramcalc sweep --stack K`` trains up to K points of one parametrization and width as one batched
model (:mod:`paramcalc.sweep.stacked`). This script times, in one run and on one device, K points
trained one after another (:func:`~paramcalc.sweep.train.train_point`, what ``--stack 1`` does in
one process) against the same K points trained stacked, at several widths, alternating the two and
taking medians; it prints both and their ratio (above 1: stacking pays), and checks the final
losses agree. Builds, parametrization and data are inside both timings, as in a sweep.

    python benchmarks/sweep_stack.py [--device cpu|cuda] [--points 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from paramcalc.spec import load_spec
from paramcalc.sweep import Point, SweepConfig
from paramcalc.sweep.stacked import train_stacked
from paramcalc.sweep.train import Job, train_point

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "digits MLP (Adam, batch 128, 10 steps)": ("digits.yaml", "digits", (32, 128, 512, 2048), 10, 128),
    "char GPT (Adam, 16 x 64 chars, 5 steps)": ("char_gpt.yaml", "chars", (16, 64, 256), 5, 16),
}


def _time(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_case(spec: str, data: str, width: int, steps: int, batch: int, args: argparse.Namespace) -> tuple:
    lrs = tuple(float(-12 + k) for k in range(args.points))
    config = SweepConfig(("mup",), "adam", (width,), lrs, steps=steps, batch=batch, data=data,
                         device=args.device, seq=64)
    job = Job(load_spec(EXAMPLES / spec), config)
    group = [Point("mup", width, lr, 0) for lr in lrs]
    one = [train_point(job, p) for p in group]  # warm: derivation, emitted code, batches
    both = train_stacked(job, group)
    agree = all(math.isclose(a["final"], b["final"], rel_tol=1e-3)
                for a, b in zip(one, both) if not a["diverged"] and not b["diverged"])
    serial, stacked = [], []
    for _ in range(args.repeat):
        serial.append(_time(lambda: [train_point(job, p) for p in group]))
        stacked.append(_time(lambda: train_stacked(job, group)))
    return statistics.median(serial), statistics.median(stacked), agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--points", type=int, default=8, help="points per width (learning rates)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (a pool worker's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, {args.points} points per width, torch {torch.__version__}, "
          f"{args.threads} thread(s), medians of {args.repeat}")
    for title, (spec, data, widths, steps, batch) in CASES.items():
        print(f"\n{title}\n| width | one by one (s) | stacked (s) | ratio | losses agree |")
        print("|---|---|---|---|---|")
        for width in widths:
            serial, stacked, agree = run_case(spec, data, width, steps, batch, args)
            ratio = serial / stacked
            print(f"| {width} | {serial:.3f} | {stacked:.3f} | {ratio:.2f}x | {agree} |", flush=True)


if __name__ == "__main__":
    main()
