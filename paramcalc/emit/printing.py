"""Printing derived expressions: one printer per output language, results cached per expression.

Templates never do arithmetic; they lay out the strings printed here.
"""

from __future__ import annotations

from functools import lru_cache

import sympy

__all__ = ["exponent_text", "latex", "python_code", "text"]


@lru_cache(maxsize=65536)
def text(expr: sympy.Expr) -> str:
    """Plain text that ``sympy.sympify`` parses back to ``expr`` (given the width symbols)."""
    return sympy.sstr(expr)


@lru_cache(maxsize=65536)
def python_code(expr: sympy.Expr) -> str:
    """A Python expression using ``math.sqrt``/``min``/``max`` over the width names."""
    from sympy.printing.pycode import PythonCodePrinter

    class _Printer(PythonCodePrinter):
        def _print_Min(self, e: sympy.Min) -> str:
            return "min({})".format(", ".join(self._print(a) for a in e.args))

        def _print_Max(self, e: sympy.Max) -> str:
            return "max({})".format(", ".join(self._print(a) for a in e.args))

    return _Printer({"standard": "python3", "fully_qualified_modules": True}).doprint(expr)


@lru_cache(maxsize=65536)
def latex(expr: sympy.Expr) -> str:
    """LaTeX math (without dollar signs)."""
    return sympy.latex(expr)


@lru_cache(maxsize=1024)
def exponent_text(exponent: sympy.Rational | None, none: str = "-") -> str:
    """``-1/2`` -> ``"-1/2"``; ``None`` (an identically zero quantity) -> ``none``."""
    return none if exponent is None else str(exponent)
