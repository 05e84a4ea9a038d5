"""The width-expression parser builds arithmetic over declared symbols and nothing else."""

import pytest
import sympy

from paramcalc.spec.expr import ExprError, parse_expr
from paramcalc.symbolic import width_symbol

d, h, k = (width_symbol(n) for n in ("d", "n_heads", "d_head"))
SYMS = {"d": d, "n_heads": h, "d_head": k}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("d", d),
        ("4*d", 4 * d),
        ("n_heads*d_head", h * k),
        ("d/2 + 1", d / 2 + 1),
        ("(d + 1) * 2", 2 * d + 2),
        ("d**2", d**2),
        ("2**-1 * d", d / 2),
        ("-(-d)", d),
        ("3072", sympy.Integer(3072)),
        ("  d  ", d),
        ("0.5*d", d / 2),
        ("2*d - d", d),
    ],
)
def test_parses_arithmetic(text, expected):
    assert parse_expr(text, SYMS) == expected


def test_sqrt_only_when_functions_allowed():
    assert parse_expr("sqrt(2)", {}, functions=True) == sympy.sqrt(2)
    assert parse_expr("0.02", {}, functions=True) == sympy.Rational(1, 50)
    with pytest.raises(ExprError, match="unknown function"):
        parse_expr("sqrt(d)", SYMS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true')", "unexpected character"),
        ("d.__class__", "unexpected character"),
        ("exp(d)", "unknown function"),
        ("lambda: 1", "unexpected character"),
        ("dd", "undefined symbol 'dd'"),
        ("", "empty"),
        ("d +", "unexpected end"),
        ("(d", "unexpected end"),
        ("d)", "after a complete expression"),
        ("d d", "after a complete expression"),
        ("d**d", "constant number"),
        ("2**2**2**2", "too large"),
        ("9" * 30, "too large"),
        ("d/0", "division by zero"),
        ("d/(d-d)", "division by zero"),
        ("(" * 40 + "d" + ")" * 40, "nested deeper"),
        ("d+" * 150 + "d", "longer than"),
        ("sqrt(-1)", "unknown function"),
    ],
)
def test_rejects(text, message):
    with pytest.raises(ExprError, match=message):
        parse_expr(text, SYMS)


def test_rejects_non_string():
    with pytest.raises(ExprError, match="expected a string"):
        parse_expr(3, SYMS)  # type: ignore[arg-type]


def test_never_evaluates_python(monkeypatch):
    # Even a string that sympify would execute is only tokenised.
    import builtins

    def trap(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", trap)
    monkeypatch.setattr(builtins, "exec", trap)
    with pytest.raises(ExprError):
        parse_expr("eval('1')", SYMS)
    assert parse_expr("n_heads * d_head", SYMS) == h * k
