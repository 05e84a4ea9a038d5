"""LaTeX: ``--emit latex`` (one derivation) and the ``table --format latex`` format.

A ``tabular`` per table, ready to ``\\input`` inside a ``table`` float; it needs no package beyond
LaTeX itself. Expressions are sympy's LaTeX (``\\frac``, ``\\sqrt``, ``\\min``), columns use the
paper's symbols (``\\sigma_\\ell``, ``\\eta_\\ell``), and every name from the spec is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy

from paramcalc.emit.printing import latex
from paramcalc.emit.tables import TableFormat, derivation_document, number_text, render_document
from paramcalc.engine import Derivation

__all__ = ["LATEX", "emit_latex", "latex_number", "latex_text"]

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def latex_text(value: str) -> str:
    """User text as LaTeX text: special characters escaped, line breaks as spaces."""
    return "".join(_SPECIAL.get(c, " " if not c.isprintable() else c) for c in str(value))


def latex_number(value: float) -> str:
    """``1.526e-05`` -> ``1.526 \\times 10^{-5}`` (math mode)."""
    mantissa, _, exponent = number_text(value).partition("e")
    return mantissa if not exponent else rf"{mantissa} \times 10^{{{int(exponent)}}}"


def _cell(expr: sympy.Expr, value: float | None) -> str:
    return f"${latex(expr)}" + ("" if value is None else f" = {latex_number(value)}") + "$"


def _exponents(exps: Sequence[str]) -> str:
    """``-1/2, 0, --``: ``--`` where the quantity is identically 0."""
    return ", ".join("--" if e == "-" else f"${e}$" for e in exps)


def _name(value: str) -> str:
    return rf"\texttt{{{latex_text(value)}}}"


LATEX = TableFormat(
    name="latex",
    template="latex/table.tex.j2",
    text=latex_text,
    name_cell=_name,
    shape=lambda shape: "$" + r" \times ".join(latex(s) for s in shape) + "$",
    cell=_cell,
    exponents=_exponents,
    repeated=lambda pattern, count: rf"{_name(pattern)} ($\times {count}$)",
    tied=lambda layer, tensor: rf"{_name(layer)} (uses {_name(tensor)})",
    headers={
        "depth": r"$L$-exponents ($\eta_\ell$, $\epsilon_\ell$)",
        "eps": r"$\epsilon_\ell$", "weight_decay": r"$\lambda_\ell$", "optimizer": "Optimizer",
        "tensor": "Tensor", "role": "Role", "shape": "Shape", "init_std": r"$\sigma_\ell$",
        "lr": r"$\eta_\ell$", "multiplier": "Multiplier", "exponents": "Exponents",
        "constant": "Constant", "scale": "Scale",
    },
)


def emit_latex(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    """One derivation as LaTeX ``tabular``: expressions, Theta-exponents and numbers at ``widths``."""
    return render_document(derivation_document(d, LATEX, widths), LATEX)
