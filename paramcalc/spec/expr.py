"""A parser that can only build arithmetic over declared width symbols.

``fan_in: 4*d`` or ``fan_out: n_heads*d_head`` are user strings. They are never handed to ``eval``
or ``sympy.sympify`` (which runs Python); instead this recursive-descent parser accepts

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := ("+" | "-") unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | SYMBOL | "sqrt" "(" expr ")" | "(" expr ")"

and builds sympy objects directly with their constructors. Sizes are bounded (length, nesting,
integer size, exponent size), so no spec can make the parser allocate without limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import sympy

__all__ = ["ExprError", "parse_expr"]

MAX_LENGTH = 200
MAX_DEPTH = 24
MAX_INTEGER = 10**15
MAX_EXPONENT = 8
#: Bits of the largest constant a power may produce.
MAX_BITS = 1024

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\.\d+|\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\*\*|[-+*/()]))"
)


class ExprError(ValueError):
    """The string is not arithmetic over the declared symbols."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise ExprError(f"unexpected character {bad!r} at position {pos + 1}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(
        self, tokens: list[tuple[str, str]], symbols: Mapping[str, sympy.Symbol], functions: bool
    ) -> None:
        self.tokens = tokens
        self.i = 0
        self.symbols = symbols
        self.functions = functions
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExprError("unexpected end of expression")
        if value is not None and tok[1] != value:
            raise ExprError(f"expected {value!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH} levels")

    def expr(self) -> sympy.Expr:
        self.enter()
        value = self.term()
        while (tok := self.peek()) is not None and tok[1] in "+-" and tok[0] == "op":
            self.take()
            rhs = self.term()
            value = sympy.Add(value, rhs) if tok[1] == "+" else sympy.Add(value, -rhs)
        self.depth -= 1
        return value

    def term(self) -> sympy.Expr:
        value = self.unary()
        while (tok := self.peek()) is not None and tok[1] in ("*", "/"):
            self.take()
            rhs = self.unary()
            if tok[1] == "*":
                value = sympy.Mul(value, rhs)
                if value.is_Rational:
                    _check_number_size(value, sympy.Integer(1))
            else:
                if rhs.is_zero:
                    raise ExprError("division by zero")
                value = sympy.Mul(value, sympy.Pow(rhs, -1))
        return value

    def unary(self) -> sympy.Expr:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in "+-":
            self.take()
            self.enter()
            inner = self.unary()
            self.depth -= 1
            return -inner if tok[1] == "-" else inner
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok[1] == "**":
            self.take()
            self.enter()
            exponent = self.unary()
            self.depth -= 1
            if not exponent.is_Rational:
                raise ExprError("an exponent must be a constant number such as 2 or 1/2")
            if abs(exponent.p) > MAX_EXPONENT or exponent.q > MAX_EXPONENT:
                raise ExprError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
            if base.is_zero and exponent.is_negative:
                raise ExprError("division by zero")
            _check_number_size(base, exponent)
            return sympy.Pow(base, exponent)
        return base

    def atom(self) -> sympy.Expr:
        kind, text = self.take()
        if kind == "num":
            if "." in text:
                if len(text) > 20:
                    raise ExprError(f"number {text!r} has too many digits")
                return sympy.Rational(text)
            if len(text) > 16 or int(text) > MAX_INTEGER:
                raise ExprError(f"integer {text} is too large (at most {MAX_INTEGER})")
            return sympy.Integer(int(text))
        if kind == "name":
            nxt = self.peek()
            if nxt is not None and nxt[1] == "(":
                if not (self.functions and text == "sqrt"):
                    allowed = "only sqrt(...) is allowed" if self.functions else "no functions"
                    raise ExprError(f"unknown function {text!r} ({allowed} here)")
                self.take("(")
                inner = self.expr()
                self.take(")")
                if inner.is_negative:
                    raise ExprError("sqrt of a negative number")
                return sympy.sqrt(inner)
            if text not in self.symbols:
                known = ", ".join(sorted(self.symbols)) or "none declared"
                raise ExprError(f"undefined symbol {text!r} (declared widths: {known})")
            return self.symbols[text]
        if text == "(":
            inner = self.expr()
            self.take(")")
            return inner
        raise ExprError(f"unexpected {text!r}")


def _check_number_size(base: sympy.Expr, exponent: sympy.Rational) -> None:
    """Refuse a constant power whose value would have more than :data:`MAX_BITS` bits, before
    sympy computes it (``((10**15)**8)**8`` nests into millions of bits)."""
    import math

    if not base.is_Rational or base.is_zero:
        return
    bits = max(abs(int(base.p)).bit_length(), int(base.q).bit_length())
    if bits * abs(exponent) > MAX_BITS:
        shown = str(base) if len(str(base)) <= 20 else f"(a {len(str(base))}-digit number)"
        shown += "" if exponent == 1 else f"**{exponent}"
        raise ExprError(f"the number {shown} is too large (more than {MAX_BITS} bits; "
                        f"about 10**{math.floor(bits * abs(exponent) * math.log10(2))})")


def parse_expr(
    text: str, symbols: Mapping[str, sympy.Symbol], *, functions: bool = False
) -> sympy.Expr:
    """Parse ``text`` into a sympy expression over ``symbols``.

    ``functions=True`` also admits ``sqrt(...)`` (for constants such as a ReLU gain ``sqrt(2)``).

    >>> import sympy
    >>> d = sympy.Symbol("d", positive=True)
    >>> parse_expr("4*d + 1", {"d": d})
    4*d + 1
    """
    if not isinstance(text, str):
        raise ExprError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExprError("empty expression")
    tokens = _tokenize(text)
    parser = _Parser(tokens, symbols, functions)
    value = parser.expr()
    if parser.peek() is not None:
        raise ExprError(f"unexpected {parser.peek()[1]!r} after a complete expression")  # type: ignore[index]
    return value
