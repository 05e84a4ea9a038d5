"""Readable terminal output (rich) for derivations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sympy

from paramcalc.emit.printing import exponent_text, text
from paramcalc.engine import QUANTITIES, Derivation
from paramcalc.symbolic import theta_exponent

__all__ = ["print_derivation", "warn_tie_gaps"]

#: A tied use further than this factor from its role is warned about.
TIE_GAP_WARNING = 2.0


def print_derivation(
    d: Derivation, widths: Mapping[str, int] | None = None, output: Path | None = None
) -> None:
    """A table of every tensor's expressions, Theta-exponents and values, then the tied uses
    (a layer computing with another layer's tensor, with its own multiplier) and the
    attention-logit scales: what the Markdown, LaTeX and HTML outputs show.

    Rows of a repeated block that are equal in every column share one row
    (``blocks.*.attn.q.weight x12``), as in those outputs.
    """
    from rich.console import Group

    values_at = d.resolve_widths(widths)
    parts: list[Any] = [_tensor_table(d, values_at)]
    if d.constants:
        parts.append(_scales_table(d, values_at))
    _show(Group(*parts), output)


def _repeated(pattern: str, count: int) -> str:
    return f"{pattern} x{count}"


def _tensor_table(d: Derivation, values_at: Mapping[str, int]) -> Any:
    from rich.table import Table

    from paramcalc.emit.tables import collapse_blocks

    values = d.evaluate(values_at)
    depth = d.spec.depth_symbols
    rows = [
        (name, (p.tensor.role, *_cells((p.init_std, p.lr, p.multiplier), p.exponents, values[name]),
                *((_depth_cell(p.lr, p.eps, depth),) if depth else ())))
        for name, p in d.items()
    ]
    collapsed, merged = collapse_blocks(rows, _repeated)
    tied_values = d.evaluate_tied(values_at)
    tied_exponents = d.tied_exponents()
    tied_rows = [
        (f"{layer} (uses {ts.tensor})", ts.role,
         *_cells((ts.init_std, ts.lr, ts.multiplier), tied_exponents[layer], tied_values[layer]),
         *(("",) if depth else ()))
        for layer, ts in d.tied.items()
    ]
    at = ", ".join(f"{k}={v}" for k, v in values_at.items())
    notes = "\n* stands for every block index of a repeated block." if merged else ""
    if any(p.tensor.init == "ones" for p in d.values()):  # W ~ N(0, 0) would read as zero gains
        notes += "\ninit_std 0 marks a constant init: biases start at 0, norm gains at 1."
    if depth:
        notes += ("\nL^k: Theta-exponents in the depth L (blocks) of lr and eps; each block's branch is "
                  "multiplied by (L / L_base)^-alpha, alpha = " + ("none" if d.depth_alpha is None
                                                                  else str(d.depth_alpha)) + ".")
    if tied_rows:
        notes += ("\nA tied use trains its owner's tensor; its row gives what it computes with: "
                  "multiplier * W, and the effective init and lr of that product.")
        for layer, gap in d.tie_gaps(values_at).items():
            notes += (f"\n{layer} at these widths: init {gap.init_ratio:.3g}x, lr {gap.lr_ratio:.3g}x its "
                      f"role's" + (" (more than 2x off: see the warning)"
                                   if gap.worst > TIE_GAP_WARNING else ""))
    table = Table(
        title=f"{d.spec.name}: {d.parametrization}, {d.optimizer.title} ({d.form} form)",
        caption="effective weight = multiplier * W, W ~ N(0, init_std^2), step = lr * eta.\n"
        f"n^k: Theta-exponents in width (init_std, lr, multiplier); values at {at}.{notes}",
    )
    table.add_column("tensor", style="bold", no_wrap=True)
    table.add_column("role")
    for q in QUANTITIES:
        table.add_column(q, overflow="fold")
    table.add_column("n^k", no_wrap=True)
    table.add_column("values", no_wrap=True)
    if depth:
        table.add_column("L^k", no_wrap=True)
    for row in (*collapsed, *tied_rows):
        table.add_row(*row)
    return table


def _depth_cell(lr: sympy.Expr, eps: sympy.Expr, depth: frozenset[sympy.Symbol]) -> str:
    return ", ".join(exponent_text(theta_exponent(e, depth)) for e in (lr, eps))


def _scales_table(d: Derivation, values_at: Mapping[str, int]) -> Any:
    from rich.table import Table

    from paramcalc.emit.tables import collapse_blocks

    constant_values = d.evaluate_constants(values_at)
    constant_rows = [(name, (text(expr), f"{constant_values[name]:.4g}"))
                     for name, expr in d.constants.items()]
    title = "attention-logit scales (pass as scaled_dot_product_attention(..., scale=))"
    if d.spec.depth_blocks:
        title += " and residual-branch scales (x = x + scale * block(x))"
    scales = Table(title=title)
    scales.add_column("constant", style="bold", no_wrap=True)
    scales.add_column("scale", overflow="fold")
    scales.add_column("value", no_wrap=True)
    for row in collapse_blocks(constant_rows, _repeated)[0]:
        scales.add_row(*row)
    return scales


def _show(group: Any, output: Path | None) -> None:
    import io

    from rich.console import Console

    if output is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        console.print(group)
        return
    from paramcalc.files import write_text_atomically

    console = Console(record=True, width=160, file=io.StringIO())
    console.print(group)
    write_text_atomically(output, console.export_text())


def _cells(
    exprs: Sequence[sympy.Expr], exps: Mapping[str, sympy.Rational | None], numbers: Mapping[str, float]
) -> tuple[str, ...]:
    """The expressions, their exponents and their numbers, as the table's cells."""
    return (
        *(text(e) for e in exprs),
        ", ".join(exponent_text(exps[q]) for q in QUANTITIES),
        ", ".join(f"{numbers[q]:.4g}" for q in QUANTITIES),
    )


def warn_tie_gaps(derivations: Sequence[Derivation], widths: Mapping[str, int] | None = None) -> None:
    """A warning line on stderr for each tied use whose init or learning rate is more than 2x off
    its role's at ``widths`` (the spec's values where left out), naming the derivations where it is.
    (A line, not :func:`warnings.warn`: it is the command line's output, whatever the warning filters.)"""
    import sys

    from paramcalc.engine.ties import gaps_by_ratio

    spec = derivations[0].spec
    values = derivations[0].resolve_widths(widths)
    at = ", ".join(f"{k}={v}" for k, v in values.items() if spec.widths[k].scaling)
    for layer, (gap, groups) in gaps_by_ratio(derivations, widths, TIE_GAP_WARNING).items():
        if len(derivations) == 1:
            sys.stderr.write(f"warning: {gap.describe(at)}\n")
            continue
        where = "; ".join(f"{', '.join(names)} ({r}x)" for r, names in groups.items())
        sys.stderr.write(f"warning: {layer} (uses {gap.tensor}, owned by {gap.owner}): at {at} its effective "
                         f"init std is more than 2x off what its role ({gap.role}) asks under {where}; no "
                         f"multiplier fits both roles at these widths (paramcalc derive --param P "
                         f"--optimizer O says more; paramcalc/engine/ties.py)\n")
