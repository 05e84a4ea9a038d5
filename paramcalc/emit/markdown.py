"""Markdown: ``--emit markdown`` (one derivation) and the ``table --format markdown`` format."""

from __future__ import annotations

import re
from collections.abc import Mapping

import sympy

from paramcalc.emit.printing import text
from paramcalc.emit.tables import TableFormat, derivation_document, number_text, render_document
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
    headers={
        "depth": "L-exponents (\u03b7, \u03b5)",
        "eps": "\u03b5", "weight_decay": "\u03bb", "optimizer": "optimizer",
        "tensor": "tensor", "role": "role", "shape": "shape", "init_std": "\u03c3", "lr": "\u03b7",
        "multiplier": "multiplier", "exponents": "exponents", "constant": "constant",
        "scale": "scale",
    },
)


def emit_markdown(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    """One derivation as a Markdown table: shape, expressions with their numbers at ``widths``,
    Theta-exponents; tied uses and attention-logit scales; repeated blocks collapsed. The same
    document as ``--emit latex`` and the docs page's tables."""
    return render_document(derivation_document(d, MARKDOWN, widths), MARKDOWN)
