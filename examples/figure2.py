"""Reproduce the paper's Figure 2: spectral quantities are Theta(1) under muP but decay with width under NTP.

Setup (paper Sec. 6 and App. A): a 3-layer ReLU MLP without biases, output 1, hidden width ``d``,
trained full-batch on 200 examples with ``+-1`` targets and the mean squared error, with the
global learning rate ``eta = 0.1``. The paper uses two classes of CIFAR-10 (input 3072); without
network access the default here (``--data synthetic``) is 200 Gaussian inputs of dimension 3072
(rows of norm ``sqrt(3072)``) with random ``+-1`` targets; ``--data digits`` trains on
scikit-learn's digits 0 and 1 (input 64, shipped with the package).

Panels, between the initial and the final network, at the second layer (as in the paper):

A. relative feature change ``E_x ||h_2(x) - h_2^0(x)|| / ||h_2^0(x)||`` (Eq. 23);
B. relative change of ``W_2`` in spectral norm, ``||W_2 - W_2^0||_* / ||W_2^0||_*``;
C. final-layer alignment ``E_x ||W_3 h'_2(x)|| / (||W_3||_* ||h'_2(x)||)`` (Eq. 24);
D. relative change of ``W_2`` in Frobenius norm.

Curves, each labelled with its fitted slope (dashed: the calculus' Theta-exponents,
:mod:`paramcalc.engine.calculus`, muP 0, 0, 0, -1/2 and NTP -1/2, -1/2, -1/2, -1):

- ``appendix-mup``, ``appendix-ntp``: App. A's constants typed in and trained by plain torch
  (:mod:`examples.appendix_a`), nothing of paramcalc's engine or verifier: the paper as it ran.
- ``features``: paramcalc's ``spectral`` rule with ``init: features`` on the first layer, which is
  App. A's muP at every width (tested in tests/test_rules.py), trained by ``paramcalc.verify``.
- ``spectral``: paramcalc's ``spectral`` rule as Parametrization 1 writes it. Below ``d = n0`` its
  ``min(1, sqrt(d/n0))`` shrinks ``sigma_1`` (0.07x App. A's at ``d = 16``, ``n0 = 3072``), so the
  first layer's features, and the second layer's, start small at narrow widths and panel A is not
  flat there; from ``d = n0`` on it is App. A (README, "The first layer on fixed inputs").
- ``mup``: paramcalc's ``mup`` (TP5 Table 3, relative to base width 16, the paper's "narrow base
  network"): the same exponents, other constants (its input rate ``d/16`` against App. A's
  ``d/n0``); at base width it is SP, so ``eta = 0.1`` means another thing for it, and it is trained
  at the rate the calculus calibrates for a first-step RMS output change of 2 at the base width
  (:func:`paramcalc.verify.calculus_lr`).

The paper trains 10^4 steps; the default here is 2000 on CPU (muP's loss reaches ~0 by then, NTP's
has not, see the printed losses) and 10^4 on CUDA.

    python examples/figure2.py [--data synthetic|digits] [--widths 16,...,1024] [--steps N]
                               [--seeds 2] [--lr 0.1] [--curves appendix-mup,...]
                               [--device auto] [--out figure2.png] [--json figure2.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paramcalc  # noqa: E402
from examples import appendix_a  # noqa: E402
from paramcalc.engine.calculus import scaling  # noqa: E402
from paramcalc.verify import calculus_lr, resolve_device, verify  # noqa: E402
from paramcalc.verify.data import make_batch  # noqa: E402
from paramcalc.verify.fit import fit_slope  # noqa: E402
from paramcalc.verify.plot import _save  # noqa: E402

#: (letter, verify's quantity, its subject, title)
PANELS = (
    ("A", "feature_change", "fc2", "relative feature change, layer 2 (Eq. 23)"),
    ("B", "relative_update", "fc2.weight", "||W2 - W2^0||_* / ||W2^0||_*"),
    ("C", "alignment", "head", "final-layer alignment (Eq. 24)"),
    ("D", "relative_frobenius", "fc2.weight", "||W2 - W2^0||_F / ||W2^0||_F"),
)
OUTPUT_CHANGE = 2.0
#: key -> (label, colour, paramcalc parametrization whose calculus predicts it, first layer's init)
CURVES = {
    "appendix-mup": ("muP, App. A constants written out", "C0", "spectral", "features"),
    "appendix-ntp": ("NTP, App. A constants written out", "C3", "ntp", "norm"),
    "features": ("paramcalc spectral, init: features (= App. A)", "C1", "spectral", "features"),
    "spectral": ("paramcalc spectral, Parametrization 1's min", "C4", "spectral", "norm"),
    "mup": ("paramcalc muP, TP5 Table 3, base 16", "C2", "mup", "norm"),
}


@dataclass
class Curve:
    """One curve's measurements: ``rows[letter][seed][width]`` and each width's worst final loss."""

    key: str
    lr: float
    rows: dict[str, list[list[float]]] = field(default_factory=dict)
    loss: list[float] = field(default_factory=list)


def spec(n0: int, base: int, first: str = "norm") -> dict:
    gain = "sqrt(2)"
    return {
        "name": "figure2-mlp",
        "activation": "relu",
        "widths": {"n0": n0, "d": {"base": base}, "n_out": 1},
        "layers": [
            {"name": "fc1", "fan_in": "n0", "fan_out": "d", "gain": gain, "init": first},
            {"name": "fc2", "fan_in": "d", "fan_out": "d", "gain": gain},
            {"name": "head", "fan_in": "d", "fan_out": "n_out", "gain": gain},
        ],
    }


def run_appendix(key: str, args: argparse.Namespace, n0: int, widths: list[int], device: torch.device,
                 tick: Callable[[int], None]) -> Curve:
    """An App. A curve: plain torch, the paper's constants (:mod:`examples.appendix_a`)."""
    curve = Curve(key, args.lr, {letter: [] for letter, *_ in PANELS})
    results = []
    for seed in range(args.seeds):
        batch = make_batch(data=args.data, loss="mse", batch=200, n_in=n0, n_out=1, sparse=False, seed=seed)
        x, y = batch.x.to(device), batch.y.to(device)
        row = []
        for i, d in enumerate(widths):
            row.append(appendix_a.train(x, y, d, key.split("-")[1], args.steps, seed, args.lr))
            tick(seed * len(widths) + i + 1)
        results.append(row)
    for letter in curve.rows:
        curve.rows[letter] = [[r[letter] for r in row] for row in results]
    curve.loss = [max(row[i]["loss"] for row in results) for i in range(len(widths))]
    return curve


def run_paramcalc(key: str, args: argparse.Namespace, n0: int, widths: list[int], device: torch.device,
                  tick: Callable[[int], None]) -> Curve:
    """A paramcalc curve: its rule, trained and measured by ``paramcalc.verify``."""
    _, _, param, first = CURVES[key]
    the_spec = paramcalc.load_spec(spec(n0, min(widths), first))
    lr = args.lr if param == "spectral" else calculus_lr(scaling(paramcalc.derive(the_spec, param, "sgd")),
                                                         None, OUTPUT_CHANGE)
    report = verify(the_spec, param, "sgd", widths=widths, steps=args.steps, seeds=args.seeds, batch=200,
                    data=args.data, loss="mse", lr=lr, center=False, measure_steps=[args.steps],
                    device=str(device), progress=lambda index, total, at: tick(index))
    curve = Curve(key, lr)
    for letter, quantity, subject, _ in PANELS:
        curve.rows[letter] = report.values(quantity, subject, args.steps)
    curve.loss = [max(m.loss[-1] for m in report.measurements if m.widths == at) for at in report.widths]
    return curve


def predicted(key: str, n0: int, widths: list[int]) -> dict[str, float | None]:
    """Each panel's Theta-exponent by the calculus, for the curve's parametrization."""
    _, _, param, first = CURVES[key]
    s = scaling(paramcalc.derive(paramcalc.load_spec(spec(n0, min(widths), first)), param, "sgd"))
    out = {}
    for letter, quantity, subject, _ in PANELS:
        exponent = s.exponent(quantity, subject)
        out[letter] = None if exponent is None else float(exponent)
    return out


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("synthetic", "digits"), default="synthetic")
    parser.add_argument("--widths", default=None, help="default 16..1024 on CPU, 16..4096 on CUDA")
    parser.add_argument("--steps", type=int, default=None, help="default 2000 on CPU, 10^4 on CUDA")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1, help="eta of App. A and of the spectral rule")
    parser.add_argument("--curves", default=",".join(CURVES), help=f"a subset of {', '.join(CURVES)}")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="figure2.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.curves = args.curves.split(",")
    unknown = [c for c in args.curves if c not in CURVES]
    if unknown:
        parser.error(f"--curves: unknown {', '.join(unknown)}; expected a subset of {', '.join(CURVES)}")
    return args


def main() -> int:
    args = parse()
    device = resolve_device(args.device)
    top = 4096 if device.type == "cuda" else 1024
    args.steps = args.steps or (10_000 if device.type == "cuda" else 2000)
    widths = [int(w) for w in args.widths.split(",")] if args.widths else [2**k for k in range(4, 13)
                                                                            if 2**k <= top]
    n0 = 64 if args.data == "digits" else 3072
    curves: list[Curve] = []
    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        per = args.seeds * len(widths)
        task = bar.add_task("", total=len(args.curves) * per)
        for k, key in enumerate(args.curves):
            bar.update(task, description=CURVES[key][0])
            runner = run_appendix if key.startswith("appendix") else run_paramcalc
            curves.append(runner(key, args, n0, widths, device,
                                 lambda done, k=k: bar.update(task, completed=k * per + done)))
    seconds = time.perf_counter() - start
    summary = plot(curves, args, n0, widths, device)
    for key, panels in summary.items():
        text = ", ".join(f"{k} {v['slope']:+.2f} ± {v['stderr']:.2f} (predicted {v['predicted']})"
                         for k, v in panels.items() if k in "ABCD")
        print(f"{key}: {text}; worst final loss {max(panels['loss']):.4f}")
    print(f"wrote {args.out} in {seconds:.1f} s on {device.type}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "data": args.data, "n0": n0, "widths": widths, "steps": args.steps, "seeds": args.seeds,
            "lr": args.lr, "device": device.type, "seconds": round(seconds, 1), "torch": torch.__version__,
            "curves": summary,
        }, indent=1))
    return 0


def plot(curves: list[Curve], args: argparse.Namespace, n0: int, widths: list[int],
         device: torch.device) -> dict[str, dict]:
    """The four panels; returns each curve's slopes, predictions and losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 5), constrained_layout=True)
    summary: dict[str, dict] = {}
    for ax, (letter, _, _, title) in zip(axes, PANELS):
        for curve in curves:
            label, color, _, _ = CURVES[curve.key]
            rows = curve.rows[letter]
            mean = [_mean([r[j] for r in rows]) for j in range(len(widths))]
            std = [_std([r[j] for r in rows]) for j in range(len(widths))]
            slope = fit_slope(widths, rows)
            exponent = predicted(curve.key, n0, widths)[letter]
            ax.plot(widths, mean, "o-", color=color,
                    label=f"{label}, lr {curve.lr:.3g}: {slope.value:+.2f} ± {slope.stderr:.2f}")
            ax.fill_between(widths, [max(m - s, m * 1e-3) for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=color, alpha=0.2, linewidth=0)
            if exponent is not None:
                _triangle(ax, widths, mean, exponent, color)
            summary.setdefault(curve.key, {"label": label, "lr": curve.lr, "loss": curve.loss})[letter] = {
                "slope": round(slope.value, 3), "stderr": round(slope.stderr, 3), "predicted": exponent,
                "mean": [round(m, 5) for m in mean],
            }
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d")
        ax.set_title(f"{letter}. {title}", fontsize=10)
        ax.legend(fontsize=6.5)
    fig.suptitle(f"Figure 2: {args.data} data (n0 = {n0}), {args.steps} full-batch steps, "
                 f"{args.seeds} seeds, {device.type}; dashed: predicted slopes")
    _save(fig, Path(args.out))
    return summary


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
