"""Reproduce the paper's Figure 2: spectral quantities are Theta(1) under muP but decay with width under NTP.

Setup (paper Sec. 6 and App. A): a 3-layer ReLU MLP without biases, output 1, hidden width ``d``,
trained full-batch on 200 examples of two classes with ``+-1`` targets and the mean squared error,
under muP and under NTP, to low training loss. The paper uses CIFAR-10 (input 3072); without network
access the default here is scikit-learn's digits (input 64, classes 0 and 1, shipped with the
package); ``--data synthetic`` trains on Gaussian inputs of dimension 3072 with random targets.

Panels, between the initial and the final network, at the second layer (as in the paper):

A. relative feature change ``E_x ||h_2(x) - h_2^0(x)|| / ||h_2^0(x)||`` (Eq. 23);
B. relative change of ``W_2`` in spectral norm, ``||W_2 - W_2^0||_* / ||W_2^0||_*``;
C. final-layer alignment ``E_x ||W_3 h'_2(x)|| / (||W_3||_* ||h'_2(x)||)`` (Eq. 24);
D. relative change of ``W_2`` in Frobenius norm.

The dashed lines' slopes are the calculus' Theta-exponents (:mod:`paramcalc.engine.calculus`):
muP 0, 0, 0, -1/2 and NTP -1/2, -1/2, -1/2, -1; each curve's label is its fitted slope.

Two muP curves. The paper's muP (App. A: ``sigma = sqrt(2/n0), sqrt(2/d), sqrt(2)/d`` and
``eta = eta d/n0, eta, eta/d``) is exactly paramcalc's *spectral* parametrization with gains
``sqrt(2)`` wherever ``d >= n0`` (below ``n0`` the spectral init also shrinks the first layer by
``sqrt(d/n0)``, Parametrization 1's ``min``). paramcalc's ``mup`` (TP5 Table 3, relative to a base
width, here the smallest, 16: the paper's "narrow base network") has the same exponents but other
constants (readout init 4x, readout rate 16x, input rate 4x App. A's): over 16..1024 they shift
finite-width crossovers, and its measured slopes drift below 0 by up to 0.3 where the paper's
constants stay flat. Both are shown.

Everything is the library's: the training and measurements are ``paramcalc.verify.verify`` with
one measurement after the last step. Hyperparameters: gains ``sqrt(2)`` (the paper's ReLU init), and
for every parametrization the global learning rate the calculus calibrates for a first-step RMS
output change of 2 at the base width (:func:`paramcalc.verify.calculus_lr`; with a full batch of 200 the
actual step is smaller), one rule for all rather than a rate tuned per curve (8 diverges with the
paper's constants). The paper trains 10^4 steps with ``eta = 0.1``.

    python examples/figure2.py [--data digits|synthetic] [--widths 16,...,1024] [--steps 2000]
                               [--seeds 3] [--device auto] [--out figure2.png] [--json figure2.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import paramcalc
from paramcalc.engine.calculus import scaling
from paramcalc.verify import Report, calculus_lr, resolve_device, verify
from paramcalc.verify.plot import _save

PANELS = (
    ("A", "feature_change", "fc2", "relative feature change, layer 2 (Eq. 23)"),
    ("B", "relative_update", "fc2.weight", "||W2 - W2^0||_* / ||W2^0||_*"),
    ("C", "alignment", "head", "final-layer alignment (Eq. 24)"),
    ("D", "relative_frobenius", "fc2.weight", "||W2 - W2^0||_F / ||W2^0||_F"),
)
OUTPUT_CHANGE = 2.0
#: (parametrization, label, colour): the paper's muP constants, NTP, and TP5 Table 3's muP.
CURVES = (
    ("spectral", "muP, App. A (= spectral)", "C0"),
    ("ntp", "NTP", "C3"),
    ("mup", "muP, TP5 Table 3, base 16", "C2"),
)


def spec(n0: int, base: int) -> dict:
    gain = "sqrt(2)"
    return {
        "name": "figure2-mlp",
        "activation": "relu",
        "widths": {"n0": n0, "d": {"base": base}, "n_out": 1},
        "layers": [
            {"name": "fc1", "fan_in": "n0", "fan_out": "d", "gain": gain},
            {"name": "fc2", "fan_in": "d", "fan_out": "d", "gain": gain},
            {"name": "head", "fan_in": "d", "fan_out": "n_out", "gain": gain},
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--widths", default=None, help="default 16..1024 on CPU, 16..4096 on CUDA")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="figure2.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    top = 4096 if device.type == "cuda" else 1024
    widths = [int(w) for w in args.widths.split(",")] if args.widths else [2**k for k in range(4, 13)
                                                                            if 2**k <= top]
    n0 = 64 if args.data == "digits" else 3072
    the_spec = paramcalc.load_spec(spec(n0, min(widths)))
    reports: dict[str, Report] = {}
    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=len(CURVES) * len(widths))
        for k, (param, label, _) in enumerate(CURVES):

            def progress(index: int, total: int, at: dict[str, int], k: int = k, label: str = label) -> None:
                bar.update(task, completed=k * len(widths) + index, description=f"{label}, d = {at['d']}")

            lr = calculus_lr(scaling(paramcalc.derive(the_spec, param, "sgd")), None, OUTPUT_CHANGE)
            reports[param] = verify(the_spec, param, "sgd", widths=widths, steps=args.steps, seeds=args.seeds,
                                    batch=200, data=args.data, loss="mse", lr=lr, center=False,
                                    measure_steps=[args.steps], device=str(device), progress=progress)
    seconds = time.perf_counter() - start

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.5), constrained_layout=True)
    summary: dict[str, dict] = {}
    for ax, (letter, quantity, subject, title) in zip(axes, PANELS):
        for param, label, color in CURVES:
            report = reports[param]
            xs = report.lead_values
            rows = report.values(quantity, subject, args.steps)
            mean = [_mean([r[j] for r in rows]) for j in range(len(xs))]
            std = [_std([r[j] for r in rows]) for j in range(len(xs))]
            slope = report.slopes[(quantity, subject, args.steps)]
            exponent = report.scaling.exponent(quantity, subject) if report.scaling else None
            ax.plot(xs, mean, "o-", color=color, label=f"{label}: {slope.value:+.2f} ± {slope.stderr:.2f}")
            ax.fill_between(xs, [max(m - s, m * 1e-3) for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=color, alpha=0.2, linewidth=0)
            if exponent is not None:
                _triangle(ax, xs, mean, float(exponent), color)
            summary.setdefault(param, {})[letter] = {
                "quantity": quantity, "subject": subject, "slope": round(slope.value, 3),
                "stderr": round(slope.stderr, 3), "predicted_exponent": str(exponent),
            }
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d")
        ax.set_title(f"{letter}. {title}", fontsize=10)
        ax.legend(fontsize=7)
    losses = {p: [max(m.loss[-1] for m in r.measurements if m.widths == at) for at in r.widths]
              for p, r in reports.items()}
    fig.suptitle(f"Figure 2: {args.data} data (n0 = {n0}), {args.steps} full-batch steps, "
                 f"{args.seeds} seeds, {device.type}; dashed: predicted slopes")
    _save(fig, Path(args.out))
    for param, panels in summary.items():
        text = ", ".join(f"{k} {v['slope']:+.2f} (predicted {v['predicted_exponent']})"
                         for k, v in panels.items())
        print(f"{param}: {text}; worst final loss {max(losses[param]):.4f}")
    print(f"wrote {args.out} in {seconds:.1f} s on {device.type}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": args.data, "n0": n0, "widths": widths, "steps": args.steps, "seeds": args.seeds,
            "device": device.type, "seconds": round(seconds, 1), "torch": torch.__version__,
            "panels": summary, "final_loss_worst_seed": losses,
        }, indent=1))
    return 0


def _mean(values: list[float]) -> float:
    good = [v for v in values if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def _std(values: list[float]) -> float:
    good = [v for v in values if math.isfinite(v)]
    if not good:
        return 0.0
    m = sum(good) / len(good)
    return math.sqrt(sum((v - m) ** 2 for v in good) / len(good))


def _triangle(ax: object, xs: list[int], mean: list[float], exponent: float, color: str) -> None:
    """A dashed line of the predicted slope through the curve's geometric centre."""
    good = [(x, m) for x, m in zip(xs, mean) if m > 0 and math.isfinite(m)]
    if len(good) < 2:
        return
    lx = sum(math.log(x) for x, _ in good) / len(good)
    ly = sum(math.log(m) for _, m in good) / len(good)
    ends = [good[0][0], good[-1][0]]
    ax.plot(ends, [math.exp(ly + exponent * (math.log(x) - lx)) for x in ends], "--", color=color,  # type: ignore[attr-defined]
            alpha=0.7, linewidth=1.5)
    ax.text(ends[-1], math.exp(ly + exponent * (math.log(ends[-1]) - lx)), f" {exponent:+g}",  # type: ignore[attr-defined]
            color=color, fontsize=8, va="center")


if __name__ == "__main__":
    raise SystemExit(main())
