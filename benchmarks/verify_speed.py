"""Cost of `paramcalc verify` as a ratio to the bare training steps it measures, in one run.

Goal (issue "Verification"): on a CPU, the paper's MLP (input 3072, hidden d, output 1, no biases,
ReLU), widths d = 64..1024, 3 steps, the whole verify (building and initialising the models through
the emitted code, training, every measurement, fitting, judging) costs at most 2x the bare training
steps at the same widths: the same models, data, optimizer and seeds, timed from the first forward
pass to the last optimizer step, with no hooks and no measurement. Both are measured here, in the
same process, alternating, and the medians compared, so the ratio does not depend on the machine.

For reference the script can also time the same verify with its spectral norms computed by a full
SVD (``torch.linalg.svdvals``) and by 20 steps of power iteration, and report how far those read
from the SVD (``--reference``; slow: the SVD variant costs two orders of magnitude more).

    python benchmarks/verify_speed.py [--repeat 5] [--seeds 3] [--reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import paramcalc
from paramcalc.verify import observe, sweep, verify
from paramcalc.verify.data import make_batch
from paramcalc.verify.model import apply_parametrization, build

GOAL = 2.0
WIDTHS = (64, 128, 256, 512, 1024)
STEPS = 3

PAPER_MLP: dict[str, Any] = {
    "name": "paper-mlp",
    "widths": {"n0": 3072, "d": {"base": 256}, "n_out": 1},
    "activation": "relu",
    "layers": [
        {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
        {"name": "fc2", "fan_in": "d", "fan_out": "d"},
        {"name": "head", "fan_in": "d", "fan_out": "n_out"},
    ],
}


def bare_steps(param: str, optimizer: str, seeds: int, batch: int, lr: float) -> tuple[float, float]:
    """Seconds spent in the training steps alone, and in whole bare runs (building the model and
    initialising it through the emitted code too), summed over widths and seeds."""
    spec = paramcalc.load_spec(PAPER_MLP)
    d = paramcalc.derive(spec, param, optimizer)
    total = runs = 0.0
    for at in sweep(spec, WIDTHS):
        for seed in range(seeds):
            begin = time.perf_counter()
            torch.manual_seed(seed)
            model = build(d, at, factory=None, device=torch.device("cpu"))
            run = apply_parametrization(d, model, at, lr=lr)
            data = make_batch(data="synthetic", loss="mse", batch=batch, n_in=3072, n_out=1, sparse=False,
                              seed=seed)
            start = time.perf_counter()
            for _ in range(STEPS):
                out = model(data.x)
                loss = data.loss_value(out)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                run.optimizer.step()
            end = time.perf_counter()
            total += end - start
            runs += end - begin
    return total, runs


def whole_verify(param: str, optimizer: str, seeds: int, batch: int) -> tuple[float, float, Any]:
    start = time.perf_counter()
    report = verify(PAPER_MLP, param, optimizer, widths=WIDTHS, steps=STEPS, seeds=seeds, batch=batch,
                    device="cpu")
    return time.perf_counter() - start, report.lr, report


def _svd_norm(a: torch.Tensor, start: Any, gen: Any, tol: float) -> tuple[float, torch.Tensor]:
    if a.shape[0] == 1 or a.shape[1] == 1:
        return float(a.norm()), a.reshape(-1)
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    return float(s[0]), vh[0]


def _power_norm(a: torch.Tensor, start: Any, gen: Any, tol: float) -> tuple[float, torch.Tensor]:
    if a.shape[0] == 1 or a.shape[1] == 1:
        return float(a.norm()), a.reshape(-1)
    v = torch.randn(a.shape[1], generator=gen)
    for _ in range(20):
        v = a.T @ (a @ v)
        v = v / v.norm()
    return float((a @ v).norm()), v


def with_norm(fn: Callable[..., tuple[float, torch.Tensor]], param: str, optimizer: str, seeds: int,
              batch: int) -> tuple[float, Any]:
    original = observe.norm
    observe.norm = fn  # type: ignore[assignment]
    try:
        seconds, _, report = whole_verify(param, optimizer, seeds, batch)
    finally:
        observe.norm = original  # type: ignore[assignment]
    return seconds, report


def max_relative_error(report: Any, exact: Any) -> float:
    worst = 0.0
    for m, e in zip(report.measurements, exact.measurements):
        for key, value in m.values.items():
            if key[0] in ("spectral_norm", "update_norm") and e.values.get(key, 0) > 0:
                worst = max(worst, abs(value / e.values[key] - 1))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--param", default="mup")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--reference", action="store_true", help="also time SVD and power-iteration norms")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    # Warm up: emission, imports, allocator.
    _, lr, _ = whole_verify(args.param, args.optimizer, 1, args.batch)
    bare_steps(args.param, args.optimizer, 1, args.batch, lr)  # warm-up
    bare, bare_runs, whole = [], [], []
    for _ in range(args.repeat):
        steps_s, runs_s = bare_steps(args.param, args.optimizer, args.seeds, args.batch, lr)
        bare.append(steps_s)
        bare_runs.append(runs_s)
        seconds, _, report = whole_verify(args.param, args.optimizer, args.seeds, args.batch)
        whole.append(seconds)
    b, r, w = statistics.median(bare), statistics.median(bare_runs), statistics.median(whole)
    ratio = w / b
    print(f"paper MLP, {args.param} {args.optimizer}, d = {WIDTHS[0]}..{WIDTHS[-1]}, {STEPS} steps, "
          f"{args.seeds} seeds, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.repeat}")
    print(f"  bare training steps     {b * 1e3:8.1f} ms")
    print(f"  bare runs (+build/init) {r * 1e3:8.1f} ms")
    print(f"  whole verify            {w * 1e3:8.1f} ms   ratio {ratio:.2f}x to the steps (goal <= {GOAL}x), "
          f"{w / r:.2f}x to the runs")
    print(f"  verdict {'PASS' if report.passed else 'FAIL'} (exit {report.exit_code})")
    row = (f"| {time.strftime('%Y-%m-%d')} | CPU, {torch.get_num_threads()} threads | "
           f"{args.param} {args.optimizer}, batch {args.batch} | {b * 1e3:.0f} ms | {r * 1e3:.0f} ms | "
           f"{w * 1e3:.0f} ms | **{ratio:.2f}x** | {w / r:.2f}x |")
    if args.reference:
        svd_s, exact = with_norm(_svd_norm, args.param, args.optimizer, args.seeds, args.batch)
        pow_s, power = with_norm(_power_norm, args.param, args.optimizer, args.seeds, args.batch)
        lanczos_err = max_relative_error(report, exact)
        power_err = max_relative_error(power, exact)
        print(f"  with full-SVD norms     {svd_s * 1e3:8.1f} ms   ratio {svd_s / b:.1f}x")
        print(f"  with 20-step power it.  {pow_s * 1e3:8.1f} ms   ratio {pow_s / b:.2f}x, reads up to "
              f"{100 * power_err:.1f}% off the SVD")
        print(f"  Lanczos (verify)        reads up to {100 * lanczos_err:.2f}% off the SVD")
        row += (f" {svd_s / b:.0f}x | {pow_s / b:.1f}x ({100 * power_err:.1f}% off) | "
                f"{100 * lanczos_err:.2f}% |")
    print("RESULTS.md row:")
    print(row)
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
