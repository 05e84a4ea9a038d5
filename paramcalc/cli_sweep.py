"""``paramcalc sweep``: a learning-rate x width grid on the user's model, its optima and their drift."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from paramcalc.cli import BaseOpt, OptimizerOpt, ScaleOpt, _resume_collector, app, user_errors
from paramcalc.cli_verify import Device, Loss
from paramcalc.errors import Problem, UsageError


@app.command()
@user_errors
def sweep(
    spec: Annotated[Path | None, typer.Argument(
        help="Architecture spec (YAML), e.g. examples/digits.yaml; left out: inferred from --model.",
        metavar="[SPEC]", show_default=False)] = None,
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
    steps: Annotated[int, typer.Option("--steps", help="Training steps per point.")] = 10,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per point (losses averaged).")] = 1,
    batch: Annotated[int, typer.Option("--batch", help="Examples (sequences for a language model) per "
                                                       "batch.")] = 128,
    seq: Annotated[int, typer.Option("--seq", help="Characters per sequence, for a language model.")] = 64,
    data: Annotated[str, typer.Option(
        "--data", help="digits (scikit-learn's 8x8 digits, 10 classes; images for a model whose input is "
        "a convolution), chars (character-level language modelling on Python's reference manual, a "
        "fresh batch each step), synthetic, or pkg.mod:function returning (inputs, targets) for "
        "(batch, seed).")] = "digits",
    loss: Annotated[Loss | None, typer.Option(
        "--loss", help="[default: cross-entropy for digits and chars, mse for synthetic, ce for a "
        "--data hook]")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="pkg.mod:function returning your nn.Module at given widths (a dict). With a SPEC "
        "its submodule paths must be the spec's layer names; without, the spec is inferred from it.")]
        = None,
    base: BaseOpt = None,
    scale: ScaleOpt = None,
    workers: Annotated[str, typer.Option(
        "--workers", help="Local processes training points at once [default auto: one per core on the "
        "CPU, 1 on a GPU].")] = "auto",
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run each point as a Ray task: auto (the cluster `ray start` made here), "
        "ADDRESS (ray://host:10001 or host:6379), or local (start Ray on this machine). Needs "
        "paramcalc[ray].")] = None,
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA when present, else CPU.")]
        = Device.auto,
    stack: Annotated[str, typer.Option(
        "--stack", help="Points of one width trained together as one batched model (vmap), up to this "
        "many [default auto: 8 on a GPU, 1 (off) on the CPU, where it does not pay].")] = "auto",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Results as JSON lines, one point per line, appended as each finishes; "
        "a rerun with the same file trains only the missing points.")] = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Draw loss against log2 lr, one curve per width, optima marked, to FILE.")] = None,
) -> None:
    """Train a learning-rate x width grid and show where the optimum lands at each width.

    Under muP and the spectral condition the optimum should stay put as the model widens (it
    transfers); under SP it drifts. Exit code 0 when the sweep ran; 1 when some points raised (the
    others are saved: rerun to retry them); 2 on bad input.
    """
    from paramcalc.cli_model import spec_or_model
    from paramcalc.cli_verify import _check_plot_format, parse_width_list
    from paramcalc.sweep.points import SweepConfig, check_grid, parse_log2_grid

    params = _parametrizations(param)
    _check_data(data)
    if plot is not None:
        _check_plot_format(plot)
    # On Ray each task resolves "auto" where it runs (a CPU-only driver may front a GPU cluster).
    chosen = device.value if ray is not None and device.value == "auto" else _device(device.value)
    config = SweepConfig(params, getattr(optimizer, "value", optimizer), tuple(parse_width_list(widths)),
                         parse_log2_grid(lrs), steps, seeds, batch, data,
                         loss.value if loss is not None else "mse" if data == "synthetic" else "ce",
                         chosen, seq)
    check_grid(config, config.widths)
    processes, together = _workers(workers, chosen), _stack(stack, chosen)
    loaded = spec_or_model(spec, model, base, scale)
    _resume_collector()
    records = _run(loaded, config, output, model=model, workers=processes, ray=ray,
                   stack=together)
    _print(records, config)
    if plot is not None:
        from paramcalc.sweep.plot import plot_sweep

        plot_sweep(records, plot)


def _parametrizations(param: str) -> tuple[str, ...]:
    from paramcalc.registry import PARAMETRIZATIONS

    params = tuple(p.strip() for p in param.split(",") if p.strip())
    unknown = [p for p in params if p not in PARAMETRIZATIONS]
    if not params or unknown:
        known = ", ".join(PARAMETRIZATIONS)
        raise UsageError([Problem("--param", f"expected parametrizations among {known}, got {param!r}")],
                         source="command line")
    return params


def _check_data(data: str) -> None:
    from paramcalc.verify.data import DATASETS, is_hook

    if data not in DATASETS and not is_hook(data):
        raise UsageError([Problem("--data", f"expected one of {', '.join(DATASETS)} or pkg.mod:function, "
                                            f"got {data!r}")], source="command line")


def _device(device: str) -> str:
    from paramcalc.verify.plan import resolve_device

    return resolve_device(device).type


def _workers(text: str, device: str) -> int:
    """``auto``: a process per core on the CPU, one process on a GPU (it owns the device)."""
    from paramcalc.sweep.execute import cores

    if text == "auto":
        return 1 if device != "cpu" else cores()
    if not text.isdigit() or int(text) < 1 or int(text) > 1024:
        raise UsageError([Problem("--workers", f"expected auto or a number of processes, got {text!r}")],
                         source="command line")
    return int(text)


#: Points per batched unit on a GPU under ``--stack auto`` (a unit that does not fit in its memory
#: trains its points one by one).
GPU_STACK = 8


def _stack(text: str, device: str) -> int:
    """``auto``: :data:`GPU_STACK` on a GPU (or on Ray's ``auto`` device), 1 on the CPU, where a batched
    step of a model is no faster than its points' steps one after another (measured in
    ``benchmarks/sweep_stack.py``)."""
    if text == "auto":
        return 1 if device == "cpu" else GPU_STACK
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise UsageError([Problem("--stack", f"expected auto or a number of points from 1 to 1024, got "
                                             f"{text!r}")], source="command line")
    return int(text)


def _run(loaded, config, output, **how):  # noqa: ANN001, ANN003, ANN202
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from paramcalc.sweep.points import SweepFailed, run_sweep

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} done"), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sweep", total=None, state="")

        def progress(p):  # noqa: ANN001, ANN202
            last = "" if p.point is None else (f"last: {p.point.parametrization} width {p.point.width} "
                                               f"lr 2^{p.point.log2_lr:g}")
            bar.update(task, completed=p.done, total=p.total,
                       state=f"{p.running} running, {p.failed} failed {last}")

        try:
            return run_sweep(loaded, config, output, progress=progress, **how)
        except SweepFailed as exc:
            where = f"; the others are in {output}: rerun with it to retry these" if output else ""
            typer.echo(f"paramcalc sweep: {exc}{where}", err=True)
            raise typer.Exit(1) from None


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
