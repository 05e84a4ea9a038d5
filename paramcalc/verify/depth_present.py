"""A depth sweep's report as text, JSON and a figure (:mod:`paramcalc.verify.depth`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from paramcalc.verify.depth import QUANTITY_TITLES, DepthReport

__all__ = ["plot_depth", "text", "to_json"]

MARKS = {"pass": "ok", "fail": "FAIL", "inconclusive": "inconclusive"}


def text(report: DepthReport) -> str:
    """The checks as a table, then the verdict naming what failed."""
    head = [
        f"verify across depth: {report.spec}, {report.parametrization}, {report.optimizer}, "
        f"alpha {report.alpha_text}",
        f"depths {report.depth_width} = {', '.join(map(str, report.depths))}; widths "
        + "; ".join(", ".join(f"{k}={v}" for k, v in at.items() if k != report.depth_width)
                    for at in report.widths),
        f"lr {report.lr:g}, {report.steps} steps, {len(report.seeds)} seeds; slopes in L, "
        "mean +- standard error over seeds",
        "",
    ]
    rows = [("", "check", "quantity", "of", "when", "slope", "offset", "judged", "expected")]
    for c in report.checks:
        rows.append((MARKS[c.verdict], c.kind, QUANTITY_TITLES[c.quantity], c.subject,
                     "init" if c.step == 0 else f"step {c.step}",
                     f"{c.slope.value:+.2f} +- {c.slope.stderr:.2f}",
                     f"{c.offset:+.2f}" if c.offset else "", f"{c.corrected:+.2f}",
                     ("<= " if c.upper else "") + f"{c.expected:.2g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    failures, weak = report.failures, report.inconclusive
    if not failures and not weak:
        verdict = f"PASS: all {len(report.checks)} checks hold across depth."
    elif not failures:
        reasons = list(dict.fromkeys(f"{QUANTITY_TITLES[c.quantity]} of {c.subject}: {c.evidence}"
                                     for c in weak))
        verdict = (f"INCONCLUSIVE (exit 3): nothing fails, but {len(weak)} of {len(report.checks)} checks "
                   "pass on too little evidence to count:\n" + "\n".join(f"  {r}" for r in reasons[:6])
                   + ("\n  ..." if len(reasons) > 6 else ""))
    else:
        named = sorted({c.subject for c in failures})
        verdict = (f"FAIL: {len(failures)} of {len(report.checks)} checks ({', '.join(named)}):\n"
                   + "\n".join(f"  {c.message}" for c in failures[:12])
                   + ("\n  ..." if len(failures) > 12 else ""))
    return "\n".join(head + table + ["", verdict]) + "\n"


def to_json(report: DepthReport) -> dict[str, Any]:
    """Everything measured and judged, for ``--json``."""

    def number(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "spec": report.spec, "parametrization": report.parametrization, "optimizer": report.optimizer,
        "depth_alpha": None if report.alpha is None else str(report.alpha),
        "depth_width": report.depth_width, "depths": list(report.depths), "widths": list(report.widths),
        "lr": report.lr, "steps": report.steps, "seeds": list(report.seeds), "passed": report.passed,
        "exit_code": report.exit_code,
        "checks": [
            {"kind": c.kind, "quantity": c.quantity, "subject": c.subject, "step": c.step,
             "slope": number(c.slope.value), "stderr": number(c.slope.stderr), "offset": c.offset,
             "corrected": number(c.corrected), "expected": c.expected,
             "upper": c.upper, "passed": c.passed, "verdict": c.verdict, "evidence": c.evidence,
             "message": c.message}
            for c in report.checks
        ],
        "values": [
            {"quantity": q, "subject": s, "step": step,
             "per_seed": [[number(v) for v in row] for row in rows]}
            for (q, s, step), rows in report.values.items()
        ],
    }


def plot_depth(report: DepthReport, path: Path) -> None:
    """One panel per quantity: its median over seeds against ``L`` (log-log) per subject, with a
    dashed line of the slope expected through the first point; written atomically to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from paramcalc.errors import UsageError

        raise UsageError(f"--plot needs matplotlib ({exc}): pip install matplotlib",
                         source="command line") from None
    quantities = list(dict.fromkeys(q for q, _, _ in report.values))
    fig, axes = plt.subplots(1, len(quantities), figsize=(4 * len(quantities), 3.6), squeeze=False)
    expected: dict[tuple[str, str, int], Any] = {}
    for c in report.checks:  # a target or the depth rule's exponent, before the calculus' slope
        expected.setdefault((c.quantity, c.subject, c.step), c)
    for ax, quantity in zip(axes[0], quantities):
        for (q, subject, step), rows in report.values.items():
            if q != quantity or step not in (0, 1, report.steps):
                continue
            ys = [_median([row[i] for row in rows]) for i in range(len(report.depths))]
            check = expected.get((q, subject, step))
            label = f"{subject}" + ("" if step == 0 else f", step {step}")
            line = ax.loglog(report.depths, ys, "o-", label=label, color=None if check is None or check.passed
                             else "tab:red")
            if check is not None and math.isfinite(ys[0]):
                ref = [ys[0] * (L / report.depths[0]) ** check.expected for L in report.depths]
                ax.loglog(report.depths, ref, "--", color=line[0].get_color(), alpha=0.5)
        ax.set_xticks(report.depths, [str(L) for L in report.depths])
        ax.minorticks_off()
        ax.set_title(QUANTITY_TITLES[quantity], fontsize=9)
        ax.set_xlabel(report.depth_width)
        ax.legend(fontsize=6)
    fig.suptitle(f"{report.spec}: {report.parametrization}, {report.optimizer}, alpha {report.alpha_text} "
                 "(dashed: expected slope)", fontsize=10)
    fig.tight_layout()
    from paramcalc.files import write_atomically

    suffix = path.suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(Path(path), lambda tmp: fig.savefig(tmp, format=suffix, dpi=110), option="--plot")
    finally:
        plt.close(fig)


def _median(values: list[float]) -> float:
    good = sorted(v for v in values if math.isfinite(v))
    if not good:
        return math.nan
    mid = len(good) // 2
    return good[mid] if len(good) % 2 else (good[mid - 1] + good[mid]) / 2
