"""How a :class:`~paramcalc.verify.report.Report` reads: its summary, its terminal table, its JSON.

The table has one row per layer or tensor and quantity: the measured log-log slope across widths
(mean over seeds +- standard error), where a target check corrects it, the calculus' finite-width
offset and the corrected slope side by side (so no offset hides a measurement), the calculus' slope
at these widths and its Theta-exponent, the exponent Desideratum 1 or Condition 1 asks for (``<= 0``:
judged from above only), and the verdict. ``ok*`` marks a target met after that correction;
``inconclusive`` a check that passes on too little evidence (:mod:`paramcalc.verify.evidence`);
``excluded`` a tensor without a gradient. Below the table: the verdict (:func:`summary`), how the
learning rate was chosen (:func:`lr_source`), the notes and the excluded tensors with their reason.
:func:`to_json` has everything, raw values included. The figure is :mod:`paramcalc.verify.plot`'s.
"""

from __future__ import annotations

import math
from typing import Any

import sympy
from rich.console import Console
from rich.table import Table
from rich.text import Text

from paramcalc.engine.calculus import QUANTITIES
from paramcalc.verify.calibrate import Calibration
from paramcalc.verify.config import AUTO_OUTPUT_CHANGE
from paramcalc.verify.judge import Check
from paramcalc.verify.report import Report

__all__ = ["AUTO_ROWS", "ROWS", "lr_source", "print_report", "report_table", "summary", "to_json"]

#: Which rows the table shows: ``all``; ``failing`` (failed or disagreeing checks only); ``auto``:
#: all for a table of at most :data:`AUTO_ROWS` rows, else the failing and inconclusive ones (a GPT
#: has ~1000).
ROWS = ("auto", "all", "failing")
AUTO_ROWS = 80


def lr_source(report: Report) -> str:
    """How the learning rate was chosen, in words (the report's footer)."""
    if not report.lr_auto:
        return "lr given"
    cal = report.calibration
    if cal is not None:
        return (f"no calculus for this architecture, so lr is calibrated by {len(cal.probes)} probe steps "
                f"at {report.lead} = {cal.widths[report.lead]}: the first step moves the hidden feature that "
                f"moves most ({cal.feature}) by {cal.change:.3g} of its RMS (target {cal.target:g}), the "
                f"output by RMS {cal.output_change:.3g}")
    return (f"lr from the calculus: its predicted first step changes the output by RMS "
            f"{AUTO_OUTPUT_CHANGE:g} at the spec's base widths")


def _has_attention(report: Report) -> bool:
    return any(q == "rms_logits" for q, _, _ in report.slopes)


def summary(report: Report) -> str:
    """One paragraph: the verdict and, for a failure, which layers fail and how fast."""
    head = f"{report.spec.name}: {report.parametrization}, {report.optimizer}"
    lead = report.lead
    if report.verdict == "inconclusive":
        return _inconclusive(head, report)
    if report.passed:
        agree = ("the measurements agree with the calculus." if report.predicted else
                 "no prediction for this architecture beyond ||W||_* at init: judged on the "
                 "paper's targets alone" + (", attention logits included." if _has_attention(report)
                                              else "."))
        return (f"{head}: PASS. Features and their updates keep RMS Theta(1) (Desideratum 1) and "
                f"||W||_*, ||dW||_* scale like sqrt(fan_out/fan_in) (Condition 1) across "
                f"{lead} = {report.widths[0][lead]}..{report.widths[-1][lead]}; {agree}")
    parts = []
    targets = [c for c in report.failures if c.kind == "target"]
    agreements = [c for c in report.failures if c.kind == "agreement"]
    if len(targets) <= 6:
        if targets:
            parts.append("fails the paper's conditions: " + "; ".join(c.message for c in targets))
    else:  # many layers: per quantity, how many fail and the worst few
        groups: dict[tuple[str, int], list[Check]] = {}
        for c in targets:
            groups.setdefault((c.quantity, c.step), []).append(c)
        lines = []
        for (quantity, step), cs in groups.items():
            cs.sort(key=lambda c: -abs(c.corrected - float(c.target or 0)))
            where = "at init" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"
            info = QUANTITIES.get(quantity)
            title = info.title if info is not None else quantity
            noun = "tensor" if info is not None and info.subject == "tensor" else "layer"
            if len({c.target for c in cs}) == 1:
                worst = ", ".join(f"{c.subject} n^{c.corrected:+.2f}" for c in cs[:3])
                asks = f"asks n^{cs[0].target}; worst {worst}"
            else:
                asks = "worst " + ", ".join(f"{c.subject} n^{c.corrected:+.2f} for n^{c.target}"
                                            for c in cs[:3])
            lines.append(f"{title} {where} at {len(cs)} {noun}{'s' if len(cs) > 1 else ''} ({asks})")
        parts.append(f"fails the paper's conditions in {len(targets)} checks: " + "; ".join(lines))
    if agreements:
        parts.append("MEASUREMENT AND PREDICTION DISAGREE, a bug somewhere: "
                     + "; ".join(c.message for c in agreements[:4]))
    parts.extend(report.findings)
    if not report.checks:
        parts.append("nothing could be checked")
    return f"{head}: FAIL. " + " ".join(p[0].upper() + p[1:] + "." for p in parts)


def _inconclusive(head: str, report: Report) -> str:
    weak = report.inconclusive
    reasons = sorted({c.evidence for c in weak})
    named = ", ".join(sorted({f"{c.title} of {c.subject}" for c in weak})[:4])
    return (f"{head}: INCONCLUSIVE (exit 3). Nothing fails, but {len(weak)} of {len(report.checks)} checks "
            f"({named}{', ...' if len(weak) > 4 else ''}) pass on too little evidence to count: "
            + "; ".join(reasons[:3]) + ("; ..." if len(reasons) > 3 else "") + ".")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _exp(x: sympy.Rational | None) -> str | None:
    return None if x is None else str(x)


def _quantities(report: Report) -> dict[str, Any]:
    """Per subject and quantity: its slope, prediction and raw values at every measured step."""
    num, exp = _num, _exp
    keys = sorted({(q, s) for q, s, _ in report.slopes})
    quantities: dict[str, Any] = {}
    for q, s in keys:
        steps = sorted(st for qq, ss, st in report.slopes if (qq, ss) == (q, s))
        entry: dict[str, Any] = {
            "title": QUANTITIES[q].title if q in QUANTITIES else q,
            "steps": {
                str(st): {
                    "slope": num(report.slopes[(q, s, st)].value),
                    "stderr": num(report.slopes[(q, s, st)].stderr),
                    "per_seed": [num(v) for v in report.slopes[(q, s, st)].per_seed],
                    "predicted_slope": num(report.predicted_slopes.get((q, s, st))),
                    "values": report.values(q, s, st),
                }
                for st in steps
            },
        }
        if report.scaling is not None and (q, s) in report.scaling:
            pred = report.scaling[(q, s)]
            entry["predicted_exponent"] = exp(pred.exponent)
            entry["predicted_expression"] = str(pred.expr)
        quantities.setdefault(s, {})[q] = entry
    for entry in quantities.values():
        for q in entry.values():
            for st in q["steps"].values():
                st["values"] = [[num(v) for v in row] for row in st["values"]]
    return quantities


def _calibration(calibration: Calibration | None) -> dict[str, Any] | None:
    if calibration is None:
        return None
    return {"widths": calibration.widths, "target_feature_change": calibration.target,
            "feature": calibration.feature,
            "probes": [{"lr": _num(lr), "feature_change": _num(c), "output_change": _num(o)}
                       for lr, c, o in calibration.probes]}


def _check(c: Check) -> dict[str, Any]:
    return {
        "kind": c.kind, "quantity": c.quantity, "subject": c.subject, "step": c.step,
        "measured": _num(c.measured.value), "stderr": _num(c.measured.stderr),
        "predicted": _num(c.predicted), "exponent": _exp(c.exponent), "target": _exp(c.target),
        "offset": _num(c.offset), "corrected": _num(c.corrected), "passed": c.passed,
        "verdict": c.verdict, "evidence": c.evidence or None, "message": c.message,
        "bound": "upper" if c.upper else "two-sided",
    }


def to_json(report: Report) -> dict[str, Any]:
    """A JSON-ready dict: settings, the verdict, checks, slopes, predictions and raw values."""
    num = _num
    return {
        "spec": report.spec.name,
        "source": report.spec.source,
        "parametrization": report.parametrization,
        "optimizer": report.optimizer,
        "form": report.form,
        "loss": report.loss,
        "centered": report.centered,
        "data": report.data,
        "lr": report.lr,
        "lr_auto": report.lr_auto,
        "lr_source": lr_source(report),
        "lr_calibration": _calibration(report.calibration),
        "predictions": ("first-step calculus" if report.predicted else
                        "none for this architecture beyond ||W||_* at init; judged on targets"),
        "steps": report.steps,
        "batch": report.batch,
        "seq": report.seq,
        "dtype": report.dtype,
        "seeds": report.seeds,
        "device": report.device,
        "emitted_code": report.emitted,
        "sweep": {"width": report.lead, "values": report.lead_values, "widths": report.widths},
        "passed": report.passed,
        "verdict": report.verdict,
        "exit_code": report.exit_code,
        "summary": summary(report),
        "findings": report.findings,
        "skipped": report.skipped,
        "excluded": [{"tensor": name, "reason": reason,
                      "relative_gradient": float(f"{report.zero_gradients.get(name, 0.0):.3g}")}
                     for name, reason in report.excluded.items()],
        "notes": report.notes,
        "checks": [_check(c) for c in report.checks],
        "quantities": _quantities(report),
        "runs": [
            {"widths": m.widths, "seed": m.seed, "loss": [num(v) for v in m.loss],
             "diverged_at": m.diverged_at, "seconds": round(m.seconds, 4),
             "measure_seconds": round(m.measure_seconds, 4)}
            for m in report.measurements
        ],
    }


def _slope(value: float, stderr: float | None = None) -> str:
    if not math.isfinite(value):
        return "-"
    if stderr is None or not math.isfinite(stderr):
        return f"{value:+.2f}"
    return f"{value:+.2f} ± {stderr:.2f}"


def report_table(report: Report, rows: str = "all") -> Table:
    """The per-quantity table of a report; ``rows`` is one of :data:`ROWS`."""
    lo, hi = (report.lead_values[0], report.lead_values[-1]) if report.widths else ("-", "-")
    lr = f"{report.lr:.3g}{' (auto)' if report.lr_auto else ''}"
    batch = f"batch {report.batch}" + (f" x {report.seq} tokens" if report.seq else "")
    table = Table(
        title=f"paramcalc verify {report.spec.name}: {report.parametrization} ({report.form}), "
        f"{report.optimizer}; {report.lead} = {lo}..{hi}",
        caption=f"{len(report.seeds)} seed(s), {report.steps} step(s), {batch}, "
        f"{report.data} data, {report.loss}{' (centered output)' if report.centered else ''}, lr {lr}, "
        f"{report.device}, {report.dtype}. Slopes of log(quantity) against log({report.lead}); update "
        "quantities after the last step, predictions after the first.",
        title_justify="left",
    )
    table.add_column("layer / tensor", style="bold", no_wrap=True)
    table.add_column("quantity", no_wrap=True)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("offset", justify="right", no_wrap=True)
    table.add_column("corrected", justify="right", no_wrap=True)
    table.add_column("predicted", justify="right", no_wrap=True)
    table.add_column("Θ-exp.", justify="right")
    table.add_column("target", justify="right")
    table.add_column("verdict")
    by_key: dict[tuple[str, str], list[Check]] = {}
    for check in report.checks:
        by_key.setdefault((check.subject, check.quantity), []).append(check)
    final = max((st for _, _, st in report.slopes), default=0)
    keys = sorted({(s, q) for q, s, _ in report.slopes},
                  key=lambda k: (*_subject_order(report, k[0]), _q(k[1])))
    if rows == "failing":
        keys = [k for k in keys if any(not c.passed for c in by_key.get(k, []))]
    elif rows == "auto" and len(keys) > AUTO_ROWS:  # a long table: what failed or is inconclusive
        keys = [k for k in keys if any(c.verdict != "pass" for c in by_key.get(k, []))]
    previous = None
    for subject, quantity in keys:
        info = QUANTITIES.get(quantity)
        step = 0 if info is not None and info.step == "init" else final
        slope = report.slopes.get((quantity, subject, step))
        if slope is None:
            continue
        checks = by_key.get((subject, quantity), [])
        pred = report.predicted_slopes.get((quantity, subject, 1 if step else 0),
                                           report.predicted_slopes.get((quantity, subject, step), math.nan))
        excluded = subject in report.excluded and info is not None and info.step == "update"
        table.add_row(subject if subject != previous else "", info.title if info else quantity,
                      *_cells(report, (quantity, subject), slope, pred, checks),
                      Text("excluded: no gradient", style="dim") if excluded else _verdict(checks))
        previous = subject
    return table


def _cells(report: Report, key: tuple[str, str], slope: Any, pred: float, checks: list[Check]) -> list[str]:
    """measured, offset, corrected (where a target check corrects), predicted, Theta-exponent, target."""
    quantity, subject = key
    exponent = None
    if report.scaling is not None and key in report.scaling:
        exponent = report.scaling.exponent(quantity, subject)
    target_check = next((c for c in checks if c.kind == "target"), None)
    target = "-" if target_check is None else str(target_check.target)
    if target_check is not None and target_check.upper:
        target = f"<= {target}"
    applied = target_check is not None and abs(target_check.offset) > 0.05
    return [_slope(slope.value, slope.stderr), _slope(target_check.offset) if applied else "",
            _slope(target_check.corrected) if applied else "", _slope(pred),
            "-" if exponent is None else str(exponent), target]


def _subject_order(report: Report, subject: str) -> tuple[int, int, str]:
    """Layer order, then the layer's features, its weight, its other tensors."""
    names = [layer.name for layer in report.spec.layers]
    if subject in names:
        return names.index(subject), 0, ""
    layer, _, param = subject.rpartition(".")
    index = names.index(layer) if layer in names else len(names)
    return index, 1 if param == "weight" else 2, subject


def _q(quantity: str) -> int:
    order = list(QUANTITIES)
    return order.index(quantity) if quantity in order else len(order)


def _verdict(checks: list[Check]) -> Text:
    if not checks:
        return Text("reported", style="dim")
    failed_target = [c for c in checks if c.kind == "target" and not c.passed]
    failed_agree = [c for c in checks if c.kind == "agreement" and not c.passed]
    parts = []
    if failed_target:
        c = failed_target[0]
        gap = c.corrected - float(c.target or 0)
        parts.append(Text(f"FAIL {'too large' if gap > 0 else 'too small'} n^{gap:+.2f}", style="bold red"))
    if failed_agree:
        parts.append(Text("DISAGREES with prediction", style="bold magenta"))
    if parts:
        return Text(" ").join(parts)
    if any(c.evidence for c in checks):
        return Text("inconclusive", style="yellow")
    corrected = any(c.kind == "target" and abs(c.offset) > 0.05 for c in checks)
    return Text("ok*" if corrected else "ok", style="green")


def print_report(report: Report, console: Console | None = None, rows: str = "auto") -> None:
    """The table, then the summary, notes, findings and skipped widths."""
    console = console or Console()
    table = report_table(report, rows)
    console.print(table)
    shown, total = table.row_count, len({(s, q) for q, s, _ in report.slopes})
    if shown < total:
        console.print(Text(f"({total - shown} passing rows not shown: --rows all shows every row.)",
                           style="dim"))
    style = {"pass": "bold green", "inconclusive": "bold yellow"}.get(report.verdict, "bold red")
    console.print(Text(summary(report), style=style))
    console.print(Text(f"* Learning rate {report.lr:.3g}: {lr_source(report)}.", style="dim"))
    for note in report.notes:
        console.print(Text(f"* {note}", style="dim"))
    by_reason: dict[str, list[str]] = {}
    for tensor, reason in report.excluded.items():
        by_reason.setdefault(reason, []).append(tensor)
    for reason, tensors in by_reason.items():
        console.print(Text(f"* {', '.join(tensors)}: {reason}.", style="dim"))
    for line in report.skipped:
        console.print(Text(f"skipped: {line}", style="yellow"))
