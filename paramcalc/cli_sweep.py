"""``paramcalc sweep``: a learning-rate x width grid on the user's model, its optima and their drift."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from paramcalc.cli import OptimizerOpt, _resume_collector, app, user_errors
from paramcalc.errors import Problem, UsageError


@app.command()
@user_errors
def sweep(
    spec: Annotated[Path, typer.Argument(help="Architecture spec (YAML), e.g. examples/digits.yaml.",
                                         metavar="SPEC")],
    param: Annotated[str, typer.Option(
        "--param", "-p", help="Parametrizations, comma-separated: one curve set each, side by side "
        "(e.g. mup,sp).")] = "mup,sp",
    optimizer: OptimizerOpt = "adam",  # type: ignore[assignment]
    widths: Annotated[str, typer.Option(
        "--widths", help="Values of the spec's first scaling width; other scaling widths follow in "
        "proportion to their bases.")] = "32,128,512,2048",
    lrs: Annotated[str, typer.Option(
        "--lrs", help="log2 of the global learning rates: LO:HI (step 1), LO:HI:STEP or a comma list.")]
        = "-12:0",
    steps: Annotated[int, typer.Option("--steps", help="Full-batch training steps per point.")] = 10,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per point (losses averaged).")] = 1,
    batch: Annotated[int, typer.Option("--batch", help="Examples in the fixed training batch.")] = 128,
    data: Annotated[str, typer.Option(
        "--data", help="digits (scikit-learn's, 10 classes, cross-entropy) or synthetic.")] = "digits",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Results as JSON lines, one point per line, appended as each finishes; "
        "a rerun with the same file trains only the missing points.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Draw loss against log2 lr, one curve per width, optima marked, to FILE.")] = None,
) -> None:
    """Train a learning-rate x width grid and show where the optimum lands at each width.

    Under muP and the spectral condition the optimum should stay put as the model widens (it
    transfers); under SP it drifts. Exit code 0 when the sweep ran; 2 on bad input.
    """
    from paramcalc.cli_model import spec_or_model
    from paramcalc.cli_verify import _check_plot_format, parse_width_list
    from paramcalc.registry import PARAMETRIZATIONS
    from paramcalc.sweep.points import SweepConfig, check_grid, parse_log2_grid
    from paramcalc.verify.data import DATASETS

    params = tuple(p.strip() for p in param.split(",") if p.strip())
    unknown = [p for p in params if p not in PARAMETRIZATIONS]
    if not params or unknown:
        known = ", ".join(PARAMETRIZATIONS)
        raise UsageError([Problem("--param", f"expected parametrizations among {known}, got {param!r}")],
                         source="command line")
    if data not in DATASETS:
        raise UsageError([Problem("--data", f"expected one of {', '.join(DATASETS)}, got {data!r}")],
                         source="command line")
    if plot is not None:
        _check_plot_format(plot)
    config = SweepConfig(params, getattr(optimizer, "value", optimizer), tuple(parse_width_list(widths)),
                         parse_log2_grid(lrs), steps, seeds, batch, data, "ce" if data == "digits" else "mse")
    check_grid(config, config.widths)
    loaded = spec_or_model(spec, None, None, None)  # --model: not yet (issue 14)
    _resume_collector()
    records = _run(loaded, config, output)
    _print(records, config)
    if plot is not None:
        from paramcalc.sweep.plot import plot_sweep

        plot_sweep(records, plot)


def _run(loaded, config, output):  # noqa: ANN001, ANN202
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from paramcalc.sweep.points import run_sweep

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} points"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=None)

        def progress(point, done, total):  # noqa: ANN001, ANN202
            bar.update(task, completed=done, total=total,
                       description=f"{point.parametrization} width {point.width} lr 2^{point.log2_lr:g}")

        return run_sweep(loaded, config, output, progress=progress)


def _print(records, config) -> None:  # noqa: ANN001
    from rich.console import Console
    from rich.table import Table

    from paramcalc.sweep.analysis import analyse, drift, wider_no_worse

    optima = analyse(records)
    table = Table(title=f"paramcalc sweep: {config.optimizer}, {config.steps} steps, batch {config.batch}, "
                  f"{config.data}")
    for column in ("param", "width", "best lr (grid)", "optimum (fitted)", "loss there", "diverged"):
        table.add_column(column, justify="right")
    for o in optima:
        diverged = sum(1 for r in records if r["parametrization"] == o.parametrization
                       and r["width"] == o.width and r["diverged"])
        fitted = "-" if math.isnan(o.log2_lr) else f"2^{o.log2_lr:.2f}" + (" (edge)" if o.at_edge else "")
        grid = "-" if math.isnan(o.grid_log2_lr) else f"2^{o.grid_log2_lr:g}"
        table.add_row(o.parametrization, str(o.width), grid, fitted, f"{o.loss:.3g}", str(diverged))
    console = Console()
    console.print(table)
    for p in config.parametrizations:
        spread = drift(optima, p)
        verdict = ("transfers" if spread <= 1 else "drifts") if math.isfinite(spread) else "no optimum"
        worse = "" if wider_no_worse(optima, p) else "; wider is worse at its optimum somewhere"
        console.print(f"{p}: the optimum moves by {spread:.2f} in log2 lr across widths "
                      f"{min(config.widths)}..{max(config.widths)}: {verdict}{worse}")
