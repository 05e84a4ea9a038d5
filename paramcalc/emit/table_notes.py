"""The notes under a parameter table: what each column means, for the columns shown."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["table_notes"]


def table_notes(
    fmt: Any, widths: Mapping[str, int] | None, single: bool, grids: Iterable[Any], derivations: Sequence[Any]
) -> list[str]:
    """The notes of a table document in ``fmt``: the columns that ``grids`` show, constant inits,
    collapsed blocks, the widths the numbers are at, and how far tied uses are from their roles."""
    spec = derivations[0].spec
    h = fmt.headers
    gains = any(t.init == "ones" for t in spec.tensors)
    notes = [
        h["init_std"] + fmt.text(": init std, W \u223c N(0, \u03c3\u00b2) at init. ")
        + h["lr"] + fmt.text(": learning-rate factor, the step size is \u03b7 times the global "
                             "learning rate tuned at the base widths. ")
        + h["multiplier"] + fmt.text(": the layer computes with multiplier \u00b7 W"
                                     + ("." if single else "; 1 where its column is left out."))
    ]
    shown = {c for g in grids for _, cols in g.groups for c in cols}
    extra = [
        ("eps", "factor on Adam's epsilon, tuned at the base widths (it shrinks where the gradient's "
                "entries do)"),
        ("weight_decay", "factor on the weight decay tuned at the base widths (0: not decayed)"),
        ("optimizer", "which optimizer trains the tensor (Muon the hidden matrices, AdamW the others)"),
        ("depth", "Theta-exponents in the depth L (the number of blocks) of \u03b7 and \u03b5; each block's "
                  "branch is multiplied by (L / L_base)^-alpha, the residual-branch scale"),
    ]
    said = [h[c] + fmt.text(f": {what}.") for c, what in extra if h[c] in shown]
    if said:
        notes.append(" ".join(said))
    if gains:  # W ~ N(0, 0) would read as zero gains
        notes.append(h["init_std"] + fmt.text(" = 0 marks a constant init: biases start at 0, norm gains "
                                              "at 1 (multiplier \u00b7 W = 1 where a multiplier acts)."))
    if single:
        notes.append(h["exponents"] + fmt.text(": Theta-exponents in width of \u03c3, \u03b7, multiplier."))
    if any(g.collapsed for g in grids):
        notes.append(fmt.text("A * in a name stands for every block index of a repeated block."))
    if widths is not None:
        notes.append(fmt.text("Values at ") + ", ".join(
            f"{fmt.name_cell(k)} = {v}" for k, v in widths.items()) + fmt.text("."))
    return notes + tie_notes(fmt, widths, derivations)


def tie_notes(fmt: Any, widths: Mapping[str, int] | None, derivations: Sequence[Any]) -> list[str]:
    """Per tied use, its effective init against its role's at ``widths`` (the spec's values where
    None) under each derivation: equal Theta-exponents, not equal numbers (paramcalc/engine/ties.py)."""
    from paramcalc.engine.ties import gaps_by_ratio

    spec = derivations[0].spec
    values = derivations[0].resolve_widths(widths)
    at = ", ".join(f"{fmt.name_cell(k)} = {v}" for k, v in values.items() if spec.widths[k].scaling)
    notes = []
    for layer, (gap, groups) in gaps_by_ratio(derivations, widths).items():
        parts = "; ".join(f"{r}x ({', '.join(names)})" if len(derivations) > 1 else f"{r}x"
                          for r, names in groups.items())
        notes.append(fmt.name_cell(layer) + fmt.text(f" uses {gap.tensor}: its effective init std is {parts} "
                                                     "its role's at ") + at
                     + fmt.text(" (its learning rate is its role's; no multiplier fits both roles where the "
                                "ratio is not 1: see paramcalc/engine/ties.py)."))
    return notes
