"""The ``paramcalc`` command line. Each command is a typed signature handing off to the library.

Bad input of any kind (spec file, option values) prints one paragraph naming the file, the field
path and what was expected, and exits 2 without a traceback.
"""

from __future__ import annotations

import functools
import gc
import re
import sys
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from paramcalc import registry
from paramcalc.errors import UsageError, UserError

app = typer.Typer(
    name="paramcalc",
    help="Per-layer init scales, learning rates and multipliers for wide networks, "
    "derived from the spectral condition for feature learning.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _choices(name: str, names: Iterable[str]) -> type[Enum]:
    """An option's choices, from a registry (:mod:`paramcalc.registry`: the only list of names)."""
    return Enum(name, {n: n for n in names}, type=str)  # type: ignore[return-value]


Param = _choices("Param", registry.PARAMETRIZATIONS)
Opt = _choices("Opt", registry.OPTIMIZERS)
Emit = _choices("Emit", ["table", *registry.EMITTERS])
TableFormat = _choices("TableFormat", registry.TABLE_FORMATS)


class Rows(str, Enum):
    auto = "auto"
    all = "all"
    failing = "failing"


SpecArg = Annotated[
    Path,
    typer.Argument(help="Architecture spec (YAML).", show_default=False, metavar="SPEC"),
]
ModelArg = Annotated[
    str, typer.Argument(metavar="MODEL", show_default=False,
                        help="pkg.mod:function: called with a dict of widths, returns your torch.nn.Module."),
]
ScaleOpt = Annotated[
    str | None,
    typer.Option("--scale", help="Which of the widths scale, e.g. d_model,n_heads (the others are fixed)."),
]
BaseOpt = Annotated[
    str | None,
    typer.Option("--base", help="With --model and no SPEC: the widths the factory reads, at their base "
                                "values, e.g. d_model=256,n_heads=4,vocab=1000 (with --scale) "
                                "[default: WIDTHS[function] of the factory's module]."),
]


SpecOrModelArg = Annotated[
    Path | None,
    typer.Argument(help="Architecture spec (YAML); left out: inferred from --model.", show_default=False,
                   metavar="[SPEC]"),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="pkg.mod:function building your torch model from a dict of widths: its "
                                 "spec is inferred, in place of SPEC."),
]


ParamOpt = Annotated[Param, typer.Option("--param", "-p", help="Parametrization.")]
OptimizerOpt = Annotated[Opt, typer.Option("--optimizer", help="Optimizer.")]
MuonAdjustOpt = Annotated[
    str | None,
    typer.Option("--muon-adjust", help="With --optimizer muon: torch.optim.Muon's adjust_lr_fn, original "
                                       "(default) or match_rms_adamw; the lr factors follow it."),
]
DecayPolicyOpt = Annotated[
    str,
    typer.Option("--decay-policy", help="Weight decay: independent (lr * weight_decay kept at its base "
                                        "value, mup's MuAdamW) or coupled (torch's plain weight_decay)."),
]
DecayOpt = Annotated[
    str,
    typer.Option("--decay", help="Tensor kinds that are decayed, among weight, embedding, gain, bias."),
]


DepthAlphaOpt = Annotated[
    str | None,
    typer.Option("--depth-alpha", help="Where a repeat's count scales (depth L): each block's branch is "
                                       "multiplied by (L/L_base)^-alpha, 1 (CompleteP, the default) to "
                                       "0.5 (depth-muP), or none (no depth scaling)."),
]


def derive_options(muon_adjust: str | None, decay_policy: str, decay: str,
                   depth_alpha: str | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`paramcalc.derive` the options above give; a bad value is a
    :class:`UsageError` naming its option."""
    from paramcalc.engine.factors import DECAY_KINDS, POLICIES
    from paramcalc.engine.optimizers.muon import ADJUSTS
    from paramcalc.errors import Problem

    kinds = tuple(k.strip() for k in decay.split(",") if k.strip())
    problems = []
    if muon_adjust is not None and muon_adjust not in ADJUSTS:
        problems.append(Problem("--muon-adjust", f"expected one of {', '.join(ADJUSTS)}, "
                                f"got {muon_adjust!r}"))
    if decay_policy not in POLICIES:
        problems.append(Problem("--decay-policy", f"expected one of {', '.join(POLICIES)}, "
                                f"got {decay_policy!r}"))
    unknown = [k for k in kinds if k not in DECAY_KINDS]
    if unknown:
        problems.append(Problem("--decay", f"expected tensor kinds among {', '.join(DECAY_KINDS)}, "
                                f"got {', '.join(unknown)}"))
    if problems:
        raise UsageError(problems, source="command line")
    return {"muon_adjust": muon_adjust, "weight_decay": decay_policy, "decay": kinds,
            "depth_alpha": depth_alpha}


def derive_from_options(loaded: Any, param: str, optimizer: str, form: str | None,
                        options: dict[str, Any]) -> Any:
    """:func:`paramcalc.derive` for a command: a bad combination is a :class:`UsageError`."""
    from paramcalc.engine import derive as run_derive

    try:
        return run_derive(loaded, param, optimizer, form=form, **options)
    except ValueError as exc:
        if isinstance(exc, UserError):
            raise
        raise UsageError(str(exc), source="command line") from None


OutputOpt = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Write to FILE (atomically) instead of stdout."),
]
WidthsOpt = Annotated[
    str | None,
    typer.Option(
        "--widths",
        help="Numbers at these widths, e.g. d=4096,n_heads=16; other widths take the spec's "
        "values (bases for scaling widths).",
    ),
]
FormOpt = Annotated[
    str | None,
    typer.Option(
        "--form",
        help="Equivalent form of the parametrization: muP has table3 (default, no multipliers) "
        "and table8 (output multiplier 1/m, as the mup package).",
    ),
]


F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from paramcalc import __version__

        sys.stdout.write(f"paramcalc {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """paramcalc: init scales, learning rates and multipliers that keep feature learning at every width."""


def user_errors(func: F) -> F:
    """Bad input -> one paragraph on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            sys.stderr.write(f"error: {exc}\n")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def parse_width_assignments(text: str | None) -> dict[str, int]:
    """``"d=4096,n_heads=16"`` -> ``{"d": 4096, "n_heads": 16}``."""
    out: dict[str, int] = {}
    if not text:
        return out
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"[0-9]{1,18}", value.strip()):
            raise UsageError(
                f"--widths: expected NAME=INTEGER items (integers of at most 18 digits) separated by commas, "
                f"got {item.strip()!r}",
                source="command line",
            )
        out[name.strip()] = int(value)
    return out


def write_output(content: str, output: Path | None) -> None:
    """Print, or write ``output`` atomically: a failure never leaves a half-written file."""
    if output is None:
        sys.stdout.write(content)
        return
    from paramcalc.files import write_text_atomically

    write_text_atomically(output, content)


@app.command()
@user_errors
def derive(
    spec: SpecOrModelArg = None,
    param: ParamOpt = Param.spectral,
    optimizer: OptimizerOpt = Opt.sgd,
    emit: Annotated[
        Emit, typer.Option("--emit", "-e", help="Output: a table in the terminal, or a format.")
    ] = Emit.table,
    output: OutputOpt = None,
    widths: WidthsOpt = None,
    form: FormOpt = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    scale: ScaleOpt = None,
    muon_adjust: MuonAdjustOpt = None,
    decay_policy: DecayPolicyOpt = "independent",
    decay: DecayOpt = "weight",
    depth_alpha: DepthAlphaOpt = None,
) -> None:
    """Derive init std, learning-rate factor, multiplier, and epsilon and weight-decay factors of every
    parameter tensor."""
    from paramcalc.cli_model import spec_or_model

    at = parse_width_assignments(widths)
    loaded = spec_or_model(spec, model, base, scale)
    derivation = derive_from_options(loaded, param.value, optimizer.value, form,
                                     derive_options(muon_adjust, decay_policy, decay, depth_alpha))
    if at:  # a depth given: list that many blocks
        derivation = derivation.at_depth(at)
    from paramcalc.report import warn_tie_gaps

    warn_tie_gaps([derivation], at)
    if emit is Emit.table:
        from paramcalc.report import print_derivation

        print_derivation(derivation, at, output)
        return
    from paramcalc.emit import emit as run_emit

    write_output(run_emit(derivation, emit.value, at), output)


@app.command()
@user_errors
def table(
    spec: SpecOrModelArg = None,
    table_format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="Markdown, LaTeX (tabular) or standalone HTML.")
    ] = TableFormat.markdown,
    output: OutputOpt = None,
    widths: Annotated[
        str | None,
        typer.Option(
            "--widths",
            help="Also print numbers at these widths, e.g. d=4096; other widths take the spec's "
            "values (bases for scaling widths).",
        ),
    ] = None,
    optimizer: Annotated[
        Opt | None, typer.Option("--optimizer", help="Only this optimizer (default: every one).")
    ] = None,
    param: Annotated[
        Param | None,
        typer.Option("--param", "-p", help="Only this parametrization (default: all four side by side)."),
    ] = None,
    model: ModelOpt = None,
    base: BaseOpt = None,
    scale: ScaleOpt = None,
    depth_alpha: DepthAlphaOpt = None,
) -> None:
    """Init std, learning-rate factor and multiplier of every tensor, parametrizations side by side."""
    from paramcalc.cli_model import spec_or_model

    at = parse_width_assignments(widths)
    loaded = spec_or_model(spec, model, base, scale)
    from paramcalc.emit.tables import render_table

    content = render_table(
        loaded,
        table_format.value,
        optimizers=[optimizer.value] if optimizer else None,
        parametrizations=[param.value] if param else None,
        widths=at if widths else None,
        depth_alpha=depth_alpha,
        warn=True,
    )
    write_output(content, output)


def _load(spec: Path):  # noqa: ANN202 - returns paramcalc.Spec
    import paramcalc.engine  # noqa: F401 - every command derives what it loads
    from paramcalc.spec import load_spec

    if _collector_paused:
        gc.freeze()  # the start-up imports: see main()
    return load_spec(spec)


_collector_paused = False


def main() -> None:
    """Console entry point.

    A cold ``paramcalc derive`` is mostly imports: sympy, pydantic (typer's option parsing builds
    pydantic adapters too) and our schemas allocate about a million objects that live until exit.
    With the cyclic garbage collector running, each of them is scanned again and again as the heap
    grows, and once more at interpreter shutdown. So a process started here pauses the collector,
    and once the engine is imported freezes everything that exists (``gc.freeze``: moved to a
    generation no collection visits, shutdown's included). ``derive`` and ``table`` then finish
    with the collector paused: they are short, and what they allocate is freed by reference
    counting. ``verify``, which trains for minutes, resumes it. Together that is about a fifth of a
    cold ``paramcalc derive`` (``benchmarks/derive_speed.py``). The library, and the CLI run
    in-process (tests, ``CliRunner``), leave the collector alone.
    """
    global _collector_paused
    import warnings

    # A warning is a line for the user ("warning: ..."), not a file name and a source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    if gc.isenabled():
        gc.disable()
        _collector_paused = True
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)


def _resume_collector() -> None:
    """For long-running commands: undo main()'s pause once the start-up imports are frozen."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.enable()


# The commands that live in their own modules register themselves on ``app``.
from paramcalc import cli_model, cli_sweep, cli_verify  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
