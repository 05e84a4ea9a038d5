"""Markdown: ``--emit markdown`` (one derivation) and the ``table --format markdown`` format."""

from __future__ import annotations

import re
from collections.abc import Mapping

import sympy

from paramcalc.emit.printing import exponent_text, text
from paramcalc.emit.tables import TableFormat, number_text
from paramcalc.emit.templating import render
from paramcalc.engine import Derivation

__all__ = ["MARKDOWN", "emit_markdown", "md_cell", "md_text"]


def md_cell(value: str) -> str:
    """Escape a string for a Markdown table cell."""
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x1c-\x1e\x85\u2028\u2029]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~])")


def md_text(value: str) -> str:
    """Escape user text for Markdown: no markup, links, HTML or table breaks, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def _code(value: str) -> str:
    """Inline code for names and expressions (which never contain backticks or bars)."""
    return f"`{md_cell(value)}`"


def _cell(expr: sympy.Expr, value: float | None) -> str:
    return _code(text(expr)) + ("" if value is None else f" = {number_text(value)}")


MARKDOWN = TableFormat(
    name="markdown",
    template="markdown/table.md.j2",
    text=md_text,
    name_cell=_code,
    shape=lambda shape: _code(" x ".join(text(s) for s in shape)),
    cell=_cell,
    exponents=lambda exps: ", ".join(exps),
    repeated=lambda pattern, count: f"{_code(pattern)} \u00d7{count}",
    tied=lambda layer, tensor: f"{_code(layer)} (uses {_code(tensor)})",
    titles={
        "spectral": "spectral", "mup": "muP", "ntp": "NTP", "sp": "SP", "sgd": "SGD", "adam": "Adam",
    },
    headers={
        "tensor": "tensor", "role": "role", "shape": "shape", "init_std": "\u03c3", "lr": "\u03b7",
        "multiplier": "multiplier", "exponents": "exponents", "constant": "constant",
        "scale": "scale",
    },
)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def emit_markdown(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    values_at = d.resolve_widths(widths)
    values = d.evaluate(values_at)
    rows = []
    for name, p in d.items():
        e = p.exponents
        v = values[name]
        rows.append(
            {
                "name": md_cell(name),
                "role": p.tensor.role,
                "shape": md_cell(" x ".join(text(s) for s in p.tensor.shape)),
                "init_std": md_cell(text(p.init_std)),
                "lr": md_cell(text(p.lr)),
                "multiplier": md_cell(text(p.multiplier)),
                "exponents": ", ".join(exponent_text(e[q]) for q in ("init_std", "lr", "multiplier")),
                "numbers": ", ".join(_fmt(v[q]) for q in ("init_std", "lr", "multiplier")),
            }
        )
    return render(
        "markdown/derivation.md.j2",
        spec=md_text(d.spec.name),
        parametrization=d.parametrization,
        optimizer=d.optimizer.title,
        form=d.form,
        widths=", ".join(f"{k} = {v}" for k, v in values_at.items()),
        rows=rows,
    )
