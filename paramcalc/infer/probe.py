"""Building a user's model at several width assignments and reading its dimensions as monomials.

A dimension of a real model is a product of its widths' powers times a constant (``3*d_model``
for GPT-2's fused ``c_attn``, ``d_model/n_heads`` for a head). Building the model at the base
widths and once more with each scaling width doubled gives, for each dimension, the exponent of
every width (``log2`` of the ratio, an integer), and the constant; one more build with every scaling
width tripled checks the guess, so a dimension that is not a monomial (``d + 16``) is caught. The
models are built on the meta device: no memory, no init.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = ["Build", "Monomial", "build_on_meta", "fit_monomial"]


@dataclass(frozen=True)
class Monomial:
    """``coefficient * prod(width ** power)``: a dimension in the width symbols."""

    coefficient: Fraction
    powers: tuple[tuple[str, int], ...]  # (width name, power), nonzero powers only

    def text(self) -> str:
        """The spec expression (``3*d_model``, ``d_model/n_heads``)."""
        num = [f"{w}" if p == 1 else f"{w}**{p}" for w, p in self.powers if p > 0]
        den = [f"{w}" if p == -1 else f"{w}**{-p}" for w, p in self.powers if p < 0]
        c = self.coefficient
        if c.numerator != 1 or not num:
            num.insert(0, str(c.numerator))
        if c.denominator != 1:
            den.insert(0, str(c.denominator))
        text = "*".join(num)
        if den:
            text += "/" + (den[0] if len(den) == 1 else "(" + "*".join(den) + ")")
        return text

    def value(self, widths: Mapping[str, int]) -> Fraction:
        out = Fraction(self.coefficient)
        for name, power in self.powers:
            out *= Fraction(widths[name]) ** power
        return out


@dataclass
class Build:
    """One build of the model: the widths it was built at and the model."""

    widths: dict[str, int]
    model: Any


def build_on_meta(factory: Callable[[dict[str, int]], Any], widths: Mapping[str, int], name: str) -> Build:
    """``factory(widths)`` on the meta device; its errors become one :class:`FactoryError`."""
    import torch

    from paramcalc.factory import call_factory

    with torch.device("meta"):
        return Build(dict(widths), call_factory(factory, widths, name))


def fit_monomial(values: Mapping[str, int], base: int, check: tuple[Mapping[str, int], int] | None,
                 at: Mapping[str, int]) -> Monomial | None:
    """The monomial through ``base`` (at widths ``at``) and ``values[w]`` (``w`` doubled), or None
    when the ratios are not powers of two or the check build (every scaling width tripled)
    disagrees."""
    powers = []
    for name, value in values.items():
        ratio = Fraction(value, base)
        power = round(math.log2(value / base)) if value > 0 else None
        if power is None or ratio != Fraction(2) ** power:
            return None
        if power:
            powers.append((name, power))
    coefficient = Fraction(base)
    for name, power in powers:
        coefficient /= Fraction(at[name]) ** power
    mono = Monomial(coefficient, tuple(powers))
    if check is not None and mono.value(check[0]) != check[1]:
        return None
    return mono
