"""The verify report in the terminal: one rich table of slopes and verdicts, then the summary.

One row per layer or tensor and quantity: the measured log-log slope across widths (mean over
seeds +- standard error), the calculus' slope at these widths and its Theta-exponent, the exponent
Desideratum 1 or Condition 1 asks for (``<= 0``: judged from above only), and the verdict. ``ok*``
marks a target met after the finite-width correction the notes explain; ``excluded`` a tensor
without a gradient. Below the table: the verdict, how the learning rate was chosen, the notes and
the excluded tensors with their reason.
"""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from paramcalc.engine.calculus import QUANTITIES
from paramcalc.verify.judge import Check
from paramcalc.verify.run import Report

__all__ = ["ROWS", "print_report", "report_table"]

#: Which rows the table shows: ``all``; ``failing`` (failed or disagreeing checks only); ``auto``:
#: all for a table of at most :data:`AUTO_ROWS` rows, else the failing ones (a GPT has ~1000).
ROWS = ("auto", "all", "failing")
AUTO_ROWS = 80


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
    if rows == "failing" or (rows == "auto" and len(keys) > AUTO_ROWS):
        keys = [k for k in keys if any(not c.passed for c in by_key.get(k, []))]
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
        exponent = None
        if report.scaling is not None and (quantity, subject) in report.scaling:
            exponent = report.scaling.exponent(quantity, subject)
        target_check = next((c for c in checks if c.kind == "target"), None)
        target = "-" if target_check is None else str(target_check.target)
        if target_check is not None and target_check.upper:
            target = f"<= {target}"
        excluded = subject in report.excluded and info is not None and info.step == "update"
        table.add_row(
            subject if subject != previous else "",
            info.title if info else quantity,
            _slope(slope.value, slope.stderr),
            _slope(pred),
            "-" if exponent is None else str(exponent),
            target,
            Text("excluded: no gradient", style="dim") if excluded else _verdict(checks),
        )
        previous = subject
    return table


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
    style = "bold green" if report.passed else "bold red"
    console.print(Text(report.summary, style=style))
    console.print(Text(f"* Learning rate {report.lr:.3g}: {report.lr_source}.", style="dim"))
    for note in report.notes:
        console.print(Text(f"* {note}", style="dim"))
    by_reason: dict[str, list[str]] = {}
    for tensor, reason in report.excluded.items():
        by_reason.setdefault(reason, []).append(tensor)
    for reason, tensors in by_reason.items():
        console.print(Text(f"* {', '.join(tensors)}: {reason}.", style="dim"))
    for line in report.skipped:
        console.print(Text(f"skipped: {line}", style="yellow"))
