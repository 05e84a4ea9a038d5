"""``paramcalc verify`` in a terminal: a progress bar over the sweep, then the report, its JSON and figure.

The command line builds a :class:`~paramcalc.verify.config.VerifyConfig` and hands it here; this
module runs it and draws the result (:mod:`paramcalc.verify.present`, :mod:`paramcalc.verify.plot`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from paramcalc.spec import Spec
from paramcalc.verify import present
from paramcalc.verify.config import VerifyConfig
from paramcalc.verify.run import verify

__all__ = ["run_in_terminal"]


def run_in_terminal(
    spec: Spec, config: VerifyConfig, *, json_out: Path | None = None, plot: Path | None = None,
    rows: str = "auto",
) -> int:
    """Run ``config`` on ``spec`` with a progress bar on stderr; print the report (``rows`` one of
    :data:`~paramcalc.verify.present.ROWS`), write its JSON and figure; return the exit code."""
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task("widths", total=len(set(config.widths)))

        def progress(index: int, total: int, at: dict[str, int]) -> None:
            label = ", ".join(f"{k}={v}" for k, v in at.items())
            bar.update(task, completed=index, total=total, description=f"training at {label}")

        report = verify(spec, config=config, progress=progress)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    present.print_report(report, console, rows)
    if json_out is not None:
        from paramcalc.files import write_text_atomically

        write_text_atomically(json_out, json.dumps(present.to_json(report), indent=1) + "\n")
    if plot is not None:
        from paramcalc.verify.plot import plot_report

        plot_report(report, plot)
    return report.exit_code
