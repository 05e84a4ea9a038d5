"""``--plot``: a figure in the style of the paper's Figure 2, written atomically.

One panel per quantity, width on a log axis: (A) relative feature change (Eq. 23), (B) relative
change of the weights in spectral norm, (C) final-layer alignment (Eq. 24; for a model with
attention, the change of its attention logits instead), (D) relative change in Frobenius norm, then
RMS(dh) and ||dW||_*. Each line is a layer or tensor, the mean over seeds with one standard
deviation shaded; the dashed line beside it is the calculus' prediction at the same widths, scaled
through the measurements' geometric mean (the calculus predicts how things scale, not their
constants), labelled with its slope. A panel with more than :data:`LEGEND_LIMIT` lines has no
legend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from paramcalc.engine.calculus import QUANTITIES
from paramcalc.errors import Problem, SpecError
from paramcalc.verify.report import Report

__all__ = ["LEGEND_LIMIT", "PANELS", "plot_report"]

#: Most lines a panel labels in its legend.
LEGEND_LIMIT = 16

#: Quantities drawn, in order, with the paper's panel letters where Figure 2 has one.
PANELS = (
    ("feature_change", "A"),
    ("relative_update", "B"),
    ("alignment", "C"),
    ("relative_frobenius", "D"),
    ("rms_dh", ""),
    ("update_norm", ""),
)


def plot_report(report: Report, path: str | os.PathLike[str], *, subjects: list[str] | None = None) -> Path:
    """Draw ``report`` to ``path`` (PNG, PDF or SVG by its suffix) and return the path.

    ``subjects`` limits the lines to these layers / tensors (default: every weight layer, and every
    weight tensor of a layer with a fan-in that scales).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the plot extra
        raise SpecError([Problem("--plot", "needs matplotlib (pip install 'paramcalc[plot]')")],
                        source="command line") from None
    path = Path(path)
    xs = [float(v) for v in report.lead_values]
    final = max((st for _, _, st in report.slopes), default=0)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    panels = list(PANELS)
    if any(q == "rms_dlogits" for q, _, _ in report.slopes):
        panels[2] = ("rms_dlogits", "")
    for ax, (quantity, letter) in zip(axes.flat, panels):
        info = QUANTITIES[quantity]
        step = 0 if info.step == "init" else final
        keys = sorted(s for q, s, st in report.slopes if q == quantity and st == step)
        if subjects is not None:
            keys = [s for s in keys if s in subjects]
        elif info.subject == "tensor":
            keys = [s for s in keys if s.endswith(".weight")]
        for i, subject in enumerate(keys):
            color = f"C{i % 10}"
            rows = report.values(quantity, subject, step)
            mean, std = _stats(rows)
            good = [j for j, m in enumerate(mean) if m > 0 and math.isfinite(m)]
            if len(good) < 2:
                continue
            gx = [xs[j] for j in good]
            gm = [mean[j] for j in good]
            slope = report.slopes[(quantity, subject, step)].value
            ax.plot(gx, gm, "o-", color=color, label=f"{subject} ({slope:+.2f})")
            lo = [max(mean[j] - std[j], mean[j] * 1e-3) for j in good]
            hi = [mean[j] + std[j] for j in good]
            ax.fill_between(gx, lo, hi, color=color, alpha=0.15, linewidth=0)
            pred = _prediction(report, quantity, subject, good)
            if pred is not None:
                pslope = report.predicted_slopes.get((quantity, subject, step), math.nan)
                ax.plot(gx, pred, "--", color=color, alpha=0.8, label=f"predicted ({pslope:+.2f})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"width {report.lead}")
        count = f", {len(keys)} lines" if len(keys) > LEGEND_LIMIT else ""
        ax.set_title(f"{letter + '. ' if letter else ''}{info.title} ({info.reference}{count})", fontsize=10)
        if ax.lines and len(keys) <= LEGEND_LIMIT:
            ax.legend(fontsize=7)
    verdict = "PASS" if report.passed else "FAIL"
    fig.suptitle(f"{report.spec.name}: {report.parametrization}, {report.optimizer} - {verdict} "
                 f"(step {final}, {len(report.seeds)} seeds)")
    _save(fig, path)
    plt.close(fig)
    return path


def _stats(rows: list[list[float]]) -> tuple[list[float], list[float]]:
    mean, std = [], []
    for j in range(len(rows[0]) if rows else 0):
        vals = [r[j] for r in rows if math.isfinite(r[j])]
        if not vals:
            mean.append(math.nan)
            std.append(0.0)
            continue
        m = sum(vals) / len(vals)
        mean.append(m)
        std.append(math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals)))
    return mean, std


def _prediction(report: Report, quantity: str, subject: str, good: list[int]) -> list[float] | None:
    calc = report.scaling
    if calc is None or (quantity, subject) not in calc:
        return None
    numbers = [calc.evaluate(report.widths[j], report.lr)[(quantity, subject)] for j in good]
    if any(not (v > 0 and math.isfinite(v)) for v in numbers):
        return None
    rows = report.values(quantity, subject, max((st for _, _, st in report.slopes), default=0)
                         if QUANTITIES[quantity].step == "update" else 0)
    mean, _ = _stats(rows)
    measured = [mean[j] for j in good]
    shift = sum(math.log(m) - math.log(p) for m, p in zip(measured, numbers)) / len(numbers)
    return [p * math.exp(shift) for p in numbers]


def _save(fig: object, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written figure."""
    from paramcalc.files import write_atomically

    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120), option="--plot")  # type: ignore[attr-defined]
