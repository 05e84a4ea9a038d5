"""Width symbols and Theta-exponent arithmetic.

A Theta-exponent is the power of n with which a quantity grows when every *scaling* width is
proportional to n and every fixed width stays put: ``d`` -> 1, ``4*d`` -> 1, ``sqrt(d)/d`` -> -1/2,
``Min(1, sqrt(d/3072))`` -> 0. It is computed from the expression tree (no limits, no
``simplify``): products add exponents, powers scale them, sums and Max take the largest, Min the
smallest. Sums are assumed not to cancel, which holds for the positive quantities used here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache

import sympy

__all__ = ["finite_values", "numeric", "theta_exponent", "width_symbol"]


@cache
def width_symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of a width: positive, so ``sqrt(d**2) == d`` without simplify."""
    return sympy.Symbol(name, positive=True)


def theta_exponent(expr: sympy.Expr, scaling: Iterable[sympy.Symbol]) -> sympy.Rational | None:
    """Theta-exponent of ``expr`` in n; ``None`` for an expression that is identically zero."""
    if not isinstance(expr, sympy.Basic):
        expr = sympy.sympify(expr)
    if not isinstance(scaling, frozenset):
        scaling = frozenset(scaling)
    return _exponent(expr, scaling)


@lru_cache(maxsize=65536)
def _exponent(expr: sympy.Basic, scaling: frozenset[sympy.Symbol]) -> sympy.Rational | None:
    if expr.is_zero:
        return None
    if expr.is_Number or expr.is_NumberSymbol:
        return sympy.Integer(0)
    if expr.is_Symbol:
        return sympy.Integer(1 if expr in scaling else 0)
    if expr.is_Mul:
        total = sympy.Integer(0)
        for arg in expr.args:
            e = _exponent(arg, scaling)
            if e is None:
                return None
            total += e
        return total
    if expr.is_Pow:
        base, power = expr.args
        if not power.is_Rational:
            raise ValueError(f"cannot take the Theta-exponent of {expr}: non-constant power")
        e = _exponent(base, scaling)
        return None if e is None else e * power
    if isinstance(expr, (sympy.Add, sympy.Max)):
        exps = [e for e in (_exponent(a, scaling) for a in expr.args) if e is not None]
        return max(exps) if exps else None
    if isinstance(expr, sympy.Min):
        exps = [_exponent(a, scaling) for a in expr.args]
        if any(e is None for e in exps):
            return None
        return min(exps)  # type: ignore[type-var]
    if isinstance(expr, sympy.Abs):
        return _exponent(expr.args[0], scaling)
    raise ValueError(f"cannot take the Theta-exponent of {expr} ({type(expr).__name__})")


def numeric(
    expr: sympy.Basic, values: Mapping[sympy.Symbol, float], memo: dict[sympy.Basic, float] | None = None
) -> float:
    """Evaluate ``expr`` in floating point at ``values`` (one value per width symbol).

    A direct walk over the same node types as :func:`theta_exponent`; shared subtrees are
    computed once through ``memo``. Cheaper than ``lambdify`` for the few distinct expressions a
    derivation has, and it imports nothing.
    """
    if memo is None:
        memo = {}
    found = memo.get(expr)
    if found is not None:
        return found
    if expr.is_Number or expr.is_NumberSymbol:
        out = float(expr)
    elif expr.is_Symbol:
        out = float(values[expr])
    elif expr.is_Mul:
        out = math.prod(numeric(a, values, memo) for a in expr.args)
    elif expr.is_Add:
        out = math.fsum(numeric(a, values, memo) for a in expr.args)
    elif expr.is_Pow:
        base, power = expr.args
        b = numeric(base, values, memo)
        out = math.sqrt(b) if power == sympy.S.Half else b ** float(power)
    elif isinstance(expr, sympy.Min):
        out = min(numeric(a, values, memo) for a in expr.args)
    elif isinstance(expr, sympy.Max):
        out = max(numeric(a, values, memo) for a in expr.args)
    elif isinstance(expr, sympy.Abs):
        out = abs(numeric(expr.args[0], values, memo))
    else:
        out = float(expr.xreplace(dict(values)))
    memo[expr] = out
    return out


def finite_values(values: dict, source: str | None, widths: Mapping[str, int] | None) -> dict:
    """``values`` (``{name: number}`` or ``{name: {quantity: number}}``) when every number is finite;
    else a :class:`~paramcalc.errors.SpecError` naming the first that is not, so that no emitted file,
    table or JSON carries ``inf`` or ``nan``."""
    import math

    from paramcalc.errors import SpecError

    for name, v in values.items():
        for q, x in (v.items() if isinstance(v, dict) else [("value", v)]):
            if not math.isfinite(x):
                at = "" if not widths else " at " + ", ".join(f"{k}={n}" for k, n in widths.items())
                raise SpecError(f"{name}: {q} evaluates to {x}{at}: a constant of the spec is too large "
                                "(or a width too small)", source=source)
    return values
