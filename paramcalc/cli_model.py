"""The commands for a user's own torch model: ``paramcalc infer`` and ``paramcalc audit``, and the
``--model pkg.mod:function`` route that ``derive``, ``table``, ``verify`` and ``audit`` take in place
of a spec file (the spec is inferred from the model, :func:`paramcalc.infer_spec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from paramcalc.cli import (
    BaseOpt,
    DecayOpt,
    DecayPolicyOpt,
    FormOpt,
    ModelArg,
    MuonAdjustOpt,
    Opt,
    OptimizerOpt,
    OutputOpt,
    Param,
    ParamOpt,
    ScaleOpt,
    SpecOrModelArg,
    _load,
    app,
    derive_from_options,
    derive_options,
    parse_width_assignments,
    user_errors,
    write_output,
)
from paramcalc.errors import FactoryError, Problem, UsageError


def inference_widths(model: str, widths: str | None, scale: str | None) -> dict[str, Any]:
    """The ``widths`` argument of infer_spec, from ``--widths``/``--base`` and ``--scale``, or from
    the factory module's ``WIDTHS[function]``."""
    from paramcalc.factory import declared_widths

    if widths is None:
        declared = declared_widths(model)
        if declared is None:
            raise UsageError(f"give the widths {model} reads, e.g. --widths d_model=256,n_heads=4,vocab=1000 "
                             "--scale d_model,n_heads (or define WIDTHS = {function name: {...}} in its "
                             "module)", source="command line")
        return declared
    values = parse_width_assignments(widths)
    scaling = [s.strip() for s in (scale or "").split(",") if s.strip()]
    unknown = [s for s in scaling if s not in values]
    if not scaling or unknown:
        raise UsageError(f"--scale: name the widths that scale among {list(values)} (comma-separated), "
                         f"got {scale!r}", source="command line")
    return {k: ({"base": v} if k in scaling else v) for k, v in values.items()}


def inferred_spec(model: str, widths: str | None, scale: str | None) -> Any:
    """The spec of the model that ``pkg.mod:function`` builds."""
    from paramcalc.factory import load_factory
    from paramcalc.infer import infer_spec

    factory = load_factory(model)
    return infer_spec(factory, inference_widths(model, widths, scale), name=model)


def spec_or_model(spec: Path | None, model: str | None, base: str | None, scale: str | None) -> Any:
    """SPEC when given, else the spec inferred from ``--model``."""
    if spec is not None:
        return _load(spec)
    if model is None:
        raise UsageError("give a SPEC file or --model pkg.mod:function (your torch model)",
                         source="command line")
    import paramcalc.engine  # noqa: F401 - every command derives what it loads

    return inferred_spec(model, base, scale)


@app.command()
@user_errors
def infer(
    model: ModelArg,
    widths: Annotated[
        str | None,
        typer.Option("--widths", help="The widths the factory reads, at their base values, e.g. "
                                      "d_model=256,n_heads=4,vocab=1000 [default: WIDTHS[function] of "
                                      "its module]."),
    ] = None,
    scale: ScaleOpt = None,
    output: OutputOpt = None,
) -> None:
    """Infer the spec of your torch model from the model itself, as a YAML spec file.

    The factory is called on the meta device (no memory) at the base widths and with each scaling
    width doubled; each tensor's dimensions are read as products of powers of the widths.
    """
    write_output(inferred_spec(model, widths, scale).to_yaml(), output)


@app.command()
@user_errors
def audit(
    spec: SpecOrModelArg = None,
    model: Annotated[str | None, typer.Option("--model", help="pkg.mod:function building your model "
                                                              "from a dict of widths.")] = None,
    optim: Annotated[str | None, typer.Option("--optim", help="pkg.mod:function(model, widths) returning "
                                                              "the torch optimizer you train with.")] = None,
    widths: Annotated[str | None, typer.Option("--widths", help="The widths to build and audit at, e.g. "
                                                                "d_model=1024.")] = None,
    param: ParamOpt = Param.spectral,
    optimizer: OptimizerOpt = Opt.sgd,
    lr: Annotated[float | None, typer.Option("--lr", help="Your global learning rate [default: the one "
                                                          "most tensors agree on].")] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="The weight decay tuned at the base widths [default: the one most decayed "
                               "matrices agree on].")] = None,
    base: BaseOpt = None,
    scale: ScaleOpt = None,
    form: FormOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="Show every check, not only failing ones.")] = False,
    muon_adjust: MuonAdjustOpt = None,
    decay_policy: DecayPolicyOpt = "independent",
    decay: DecayOpt = "weight",
    adam_lr: Annotated[float | None, typer.Option(
        "--adam-lr", help="Under Muon: your AdamW learning rate [default: the one most agree on].")] = None,
    eps: Annotated[float | None, typer.Option(
        "--eps", help="Adam's epsilon tuned at the base widths [default: the one most agree on].")] = None,
) -> None:
    """Check your model and optimizer against a parametrization, tensor by tensor.

    Per tensor: init std, learning rate, forward multiplier, attention scale and weight decay,
    expected and found, with the fix. Exit code 0 when all agree, 1 when any is off, 2 on bad input.
    """
    if model is None or optim is None:
        raise UsageError("audit needs --model pkg.mod:function (your model) and --optim "
                         "pkg.mod:function (model, widths -> your optimizer)", source="command line")
    from paramcalc.auditing import audit as run_audit
    from paramcalc.factory import call_factory, load_factory

    loaded = spec_or_model(spec, model, base, scale)
    d = derive_from_options(loaded, param.value, optimizer.value, form,
                            derive_options(muon_adjust, decay_policy, decay))
    at = d.resolve_widths(parse_width_assignments(widths))
    built = call_factory(load_factory(model), at, model)
    make = load_factory(optim, "--optim")
    try:
        opt = make(built, dict(at))
    except Exception as exc:  # noqa: BLE001 - user code
        raise FactoryError([Problem("--optim", f"{optim}(model, {dict(at)}) raised {type(exc).__name__}: "
                                               f"{exc}")], source="command line") from None
    report = run_audit(built, opt, d, at, lr=lr, weight_decay=weight_decay, eps=eps, adam_lr=adam_lr)
    typer.echo(report.text("all" if show_all else "failing"), nl=False)
    raise typer.Exit(0 if report.ok else 1)
