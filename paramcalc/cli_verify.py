"""``paramcalc verify``: its options, handed to :mod:`paramcalc.verify`."""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from paramcalc.cli import (
    BaseOpt,
    DecayOpt,
    DecayPolicyOpt,
    DepthAlphaOpt,
    FormOpt,
    MuonAdjustOpt,
    Opt,
    OptimizerOpt,
    Param,
    ParamOpt,
    Rows,
    ScaleOpt,
    SpecOrModelArg,
    _resume_collector,
    app,
    derive_options,
    user_errors,
)
from paramcalc.errors import UsageError
from paramcalc.files import write_text_atomically


class Loss(str, Enum):
    mse = "mse"
    ce = "ce"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _check_plot_format(plot: Path) -> None:
    """Refuse a --plot file type matplotlib cannot write before training, not after."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return  # the plot step says what to install
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = plot.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"--plot: cannot draw a .{suffix or '(no extension)'} file; use one of "
                         f"{', '.join(sorted(formats))}", source="command line")


def parse_width_list(text: str, option: str = "--widths") -> list[int]:
    """``"64,128,256"`` -> ``[64, 128, 256]``."""
    values = []
    what = "values of the spec's first scaling width" if option == "--widths" else "block counts"
    for item in text.split(","):
        item = item.strip()
        if not re.fullmatch(r"[0-9]{1,9}", item) or int(item) <= 0:
            raise UsageError(
                f"{option}: expected positive integers separated by commas ({what}), got {item!r}",
                source="command line",
            )
        values.append(int(item))
    return values


@app.command()
@user_errors
def verify(
    spec: SpecOrModelArg = None,
    param: ParamOpt = Param.spectral,
    optimizer: OptimizerOpt = Opt.sgd,
    widths: Annotated[
        str | None,
        typer.Option("--widths", help="Values of the spec's first scaling width to train at; other "
                                      "scaling widths follow in proportion to their bases [default: "
                                      "64,128,256,512,1024; with --depths, the base width]."),
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option("--depths", help="Instead: train at these block counts of the repeat whose count "
                                      "scales, e.g. 2,4,8,16 (widths fixed: the base, or each --widths "
                                      "value), and check the stream, each block's own change and its "
                                      "updates against their slopes in L. With --model, the block "
                                      "count is a width in --scale (e.g. --scale d_model,n_heads,n_layers)."),
    ] = None,
    depth_alpha: DepthAlphaOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Full-batch training steps at each width "
                                                           "[default: 3; 50 with --decay-check].")] = None,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", help="Seeds per width (slopes get a standard error) [default: 8; 6 for a "
                                     "transformer, whose few tokens make some slopes heavy-tailed]."),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option("--batch", help="Examples (sequences, for a transformer) in the fixed training batch "
                                     "[default: 32; 2 sequences for a transformer; 1 image for a model "
                                     "whose input is a convolution]."),
    ] = None,
    seq: Annotated[
        int | None,
        typer.Option("--seq", help="Tokens per sequence for a transformer [default: 2]: few tokens keep its "
                                   "first updates low-rank, the regime the theory describes."),
    ] = None,
    data: Annotated[
        str,
        typer.Option("--data", help="synthetic (||x|| = sqrt(n0), token ids, or Gaussian images for a model "
                                    "whose input is a convolution), digits (scikit-learn's), or "
                                    "pkg.mod:function: function(batch, seed) returns (inputs, targets) "
                                    "for your model."),
    ] = "synthetic",
    loss: Annotated[
        Loss | None,
        typer.Option("--loss", help="Mean squared error or cross-entropy [default: mse; next-token "
                                    "cross-entropy for a transformer]."),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", help="Global learning rate. Default: for a chain, the one whose predicted "
                                  "first step changes the output by RMS 0.1 at the spec's base widths; "
                                  "otherwise (a transformer, a --model that is not a chain) the one whose "
                                  "first step, measured by probe steps at the smallest width, moves the "
                                  "most-moving hidden feature by 10% of its RMS."),
    ] = None,
    center: Annotated[
        bool,
        typer.Option("--center/--no-center", help="Train the centered output f - f_0 (default), so the "
                                                  "first step's loss gradient is the targets' alone."),
    ] = True,
    device: Annotated[
        Device, typer.Option("--device", help="auto: CUDA when present, else CPU.")
    ] = Device.auto,
    dtype: Annotated[
        DType | None,
        typer.Option("--dtype", help="Floating-point type of the models [default: float32 for a chain, "
                                     "float64 otherwise, where some first updates are below float32's "
                                     "resolution]."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="pkg.mod:function returning your nn.Module at given widths (a dict). "
                                     "With a SPEC its submodule paths must be the spec's layer names; "
                                     "without, the spec is inferred from it."),
    ] = None,
    base: BaseOpt = None,
    scale: ScaleOpt = None,
    form: FormOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON to FILE.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw the slopes, Figure 2 style, to FILE (.png, .pdf, .svg)."),
    ] = None,
    rows: Annotated[
        Rows,
        typer.Option("--rows", help="Table rows: all, only failing, or auto (all up to 80 rows, else "
                     "the failing and inconclusive ones; --json always has everything)."),
    ] = Rows.auto,
    muon_adjust: MuonAdjustOpt = None,
    decay_policy: DecayPolicyOpt = "independent",
    decay: DecayOpt = "weight",
    weight_decay: Annotated[
        float,
        typer.Option("--weight-decay", help="Train with this weight decay (tuned at the base widths, times "
                                            "each tensor's factor); with --decay-check, the one whose effect "
                                            "is measured [default: 0, none; 0.1 with --decay-check]."),
    ] = 0.0,
    train_adjust: Annotated[
        str | None,
        typer.Option("--train-adjust", help="Train Muon with this adjust_lr_fn instead of the derived one: "
                                            "what a mismatch does (e.g. factors for original, trained "
                                            "with match_rms_adamw)."),
    ] = None,
    decay_check: Annotated[
        bool,
        typer.Option("--decay-check", help="Instead: measure what weight decay does over --steps steps "
                                           "(1 - ||W(decay)|| / ||W(none)|| per decayed matrix) and say "
                                           "whether it is width-independent."),
    ] = False,
) -> None:
    """Train across widths; check Desideratum 1 and Condition 1, and the calculus' predictions.

    Exit code 0 when the parametrization keeps features and their updates Theta(1) and spectral
    norms like sqrt(fan_out/fan_in), and measurements agree with predictions; 1 when a check fails;
    3 when nothing fails but the evidence is too thin for a verdict (fewer than 3 widths, a span
    under 8x, or a slope's allowance over 0.2: add widths or seeds).
    """
    try:
        from paramcalc.verify import VerifyConfig
        from paramcalc.verify.terminal import run_in_terminal
    except ImportError as exc:
        raise UsageError(f"verify needs torch ({exc}); pip install 'paramcalc[torch]'",
                        source="command line") from None
    chosen = derive_options(muon_adjust, decay_policy, decay, depth_alpha)
    if depths is not None:
        if decay_check:
            raise UsageError("--depths and --decay-check are two different runs: give one",
                             source="command line")
        if plot is not None:
            _check_plot_format(plot)
        _verify_depths(spec, (model, base, scale), param.value, optimizer.value, depths, {
            "widths": parse_width_list(widths) if widths else None, "depth_alpha": chosen["depth_alpha"],
            "steps": steps, "seeds": seeds, "batch": batch, "seq": seq, "lr": lr,
            "dtype": None if dtype is None else dtype.value, "device": _depth_device(device.value),
        }, json_out, plot)
    widths = widths or "64,128,256,512,1024"
    if plot is not None and decay_check:
        raise UsageError("--plot draws a verify run's slopes; with --decay-check, --json has the "
                         "figures", source="command line")
    if plot is not None:
        _check_plot_format(plot)
    config = VerifyConfig(
        param.value, optimizer.value, form=form, widths=tuple(parse_width_list(widths)),
        steps=steps if steps is not None else 50 if decay_check else 3,
        seeds=seeds, batch=batch, data=data, loss=None if loss is None else loss.value, lr=lr,
        device=device.value, model=model, seq=seq, center=center,
        dtype=None if dtype is None else dtype.value, muon_adjust=chosen["muon_adjust"],
        depth_alpha=chosen["depth_alpha"],
        weight_decay_policy=chosen["weight_decay"], decay=chosen["decay"],
        weight_decay=weight_decay or (0.1 if decay_check else 0.0), train_adjust=train_adjust,
    )
    from paramcalc.cli_model import spec_or_model

    loaded = spec_or_model(spec, model, base, scale)
    _resume_collector()
    if decay_check:
        from paramcalc.verify.decay import check_decay

        report = check_decay(loaded, config,
                             progress=lambda where: typer.echo(f"training at {where}", err=True))
        if json_out is not None:
            write_text_atomically(json_out, json.dumps(report.to_dict(), indent=2) + "\n", option="--json")
        typer.echo(report.text(), nl=False)
        raise typer.Exit(0 if report.passed else 1)
    raise typer.Exit(run_in_terminal(loaded, config, json_out=json_out, plot=plot, rows=rows.value))


def _depth_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _verify_depths(spec: Path | None, model: tuple[str | None, str | None, str | None], param: str,
                   optimizer: str, depths: str, options: dict, json_out: Path | None,
                   plot: Path | None) -> None:
    """``verify --depths``: the sweep over depth with a progress bar, its report, JSON and figure;
    ``model`` is ``--model``, ``--base`` and ``--scale`` (a factory's model, its spec inferred)."""
    if spec is None and model[0] is None:
        raise UsageError("--depths needs a SPEC whose repeat count scales, or --model with the block count "
                         "among --scale", source="command line")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from paramcalc.cli_model import spec_or_model
    from paramcalc.factory import load_factory
    from paramcalc.verify.depth import verify_depth
    from paramcalc.verify.depth_present import plot_depth, text, to_json

    values = parse_width_list(depths, "--depths")
    loaded = spec_or_model(spec, *model)
    if model[0] is not None:
        options = {**options, "factory": load_factory(model[0])}
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("depths", total=None)
        report = verify_depth(loaded, param, optimizer, depths=values, options=options,
                              progress=lambda where: bar.update(task, description=f"training at {where}"))
    typer.echo(text(report), nl=False)
    if json_out is not None:
        write_text_atomically(json_out, json.dumps(to_json(report), indent=1) + "\n", option="--json")
    if plot is not None:
        plot_depth(report, plot)
    raise typer.Exit(report.exit_code)
