"""What a parametrization rule sees and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import sympy

from paramcalc.engine.optimizers import Optimizer

__all__ = ["Rule", "Scales", "TensorShape", "title_in"]


@dataclass(frozen=True)
class TensorShape:
    """The facts about a tensor that a rule may use; equal shapes share one derivation.

    ``d_in`` is the input dimension in natural norms (fan_in for dense inputs, 1 for one-hot
    inputs, biases and gains); ``*_base`` are their values at the spec's base widths, used by the
    rules written relative to base widths (muP): the scaling symbols at their bases, fixed
    symbols left as they are. ``role`` is input / hidden / output / fixed. ``stored`` is the
    matrix as torch stores it, for a law that reads the stored layout (Muon's shape factor).
    ``init_form`` is the layer's ``init:`` (``norm`` or ``features``, see the spectral rule).
    """

    d_in: sympy.Expr
    fan_out: sympy.Expr
    d_in_base: sympy.Expr
    fan_out_base: sympy.Expr
    role: str
    gain: sympy.Expr
    #: The stored matrix ``(rows, cols)`` (torch's layout) and at base widths; None where unknown.
    stored: tuple[sympy.Expr, sympy.Expr] | None = None
    stored_base: tuple[sympy.Expr, sympy.Expr] | None = None
    init_form: str = "norm"


class Scales(NamedTuple):
    """Per-tensor result: ``W ~ N(0, init_std**2)``, step ``lr * global_lr``, forward ``multiplier * W``."""

    init_std: sympy.Expr
    lr: sympy.Expr
    multiplier: sympy.Expr


class Rule(Protocol):
    """A parametrization: its name, display title (``titles``: per output format where it differs,
    e.g. LaTeX's ``$\\mu$P``), its equivalent forms, and its scales per tensor shape."""

    name: str
    title: str
    forms: tuple[str, ...]

    def scales(self, shape: TensorShape, optimizer: Optimizer, form: str) -> Scales: ...

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        """The factor on ``q . k`` logits (``scaled_dot_product_attention(..., scale=...)``)."""
        ...


def title_in(obj: object, fmt: str) -> str:
    """The display title of a rule or optimizer in output format ``fmt``."""
    return getattr(obj, "titles", {}).get(fmt, obj.title)  # type: ignore[attr-defined]
