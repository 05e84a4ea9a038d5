"""HTML: the ``table --format html`` format (also ``emit(d, "html")`` for one derivation).

A standalone page (no script, no external file): expressions as MathML, which browsers render
natively, and every name from the spec escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from functools import lru_cache

import sympy

from paramcalc.emit.tables import TableFormat, derivation_document, number_text, render_document
from paramcalc.engine import Derivation

__all__ = ["HTML", "emit_html", "html_number", "mathml"]


@lru_cache(maxsize=65536)
def mathml(expr: sympy.Expr) -> str:
    """Presentation MathML of ``expr`` inside ``<math>``."""
    from sympy.printing.mathml import mathml as print_mathml

    return f"<math>{print_mathml(expr, printer='presentation')}</math>"


def html_number(value: float) -> str:
    """``1.526e-05`` -> ``1.526&#215;10<sup>&#8722;5</sup>``."""
    mantissa, _, exponent = number_text(value).partition("e")
    if not exponent:
        return mantissa
    power = int(exponent)
    sign = "&#8722;" if power < 0 else ""
    return f"{mantissa}&#215;10<sup>{sign}{abs(power)}</sup>"


def _text(value: str) -> str:
    return html.escape(str(value), quote=True)


def _name(value: str) -> str:
    return f"<code>{_text(value)}</code>"


def _cell(expr: sympy.Expr, value: float | None) -> str:
    return mathml(expr) + ("" if value is None else f" = {html_number(value)}")


def _exponents(exps: Sequence[str]) -> str:
    return ", ".join("&#8211;" if e == "-" else _text(e) for e in exps)


def _shape(shape: Sequence[sympy.Expr]) -> str:
    """``d x n_in`` as one MathML formula."""
    inner = [mathml(s)[len("<math>"):-len("</math>")] for s in shape]
    return "<math><mrow>" + "<mo>&#215;</mo>".join(inner) + "</mrow></math>"


HTML = TableFormat(
    name="html",
    template="html/table.html.j2",
    text=_text,
    name_cell=_name,
    shape=_shape,
    cell=_cell,
    exponents=_exponents,
    repeated=lambda pattern, count: f"{_name(pattern)} &#215;{count}",
    tied=lambda layer, tensor: f"{_name(layer)} (uses {_name(tensor)})",
    headers={
        "depth": "L-exponents (&#951;, &#949;)",
        "eps": "&#949;<sub>&#8467;</sub>", "weight_decay": "&#955;<sub>&#8467;</sub>",
        "optimizer": "optimizer",
        "tensor": "tensor", "role": "role", "shape": "shape", "init_std": "&#963;<sub>&#8467;</sub>",
        "lr": "&#951;<sub>&#8467;</sub>", "multiplier": "multiplier", "exponents": "exponents",
        "constant": "constant", "scale": "scale",
    },
)


def emit_html(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    """One derivation as a standalone HTML page: expressions, exponents, numbers at ``widths``."""
    return render_document(derivation_document(d, HTML, widths), HTML)
