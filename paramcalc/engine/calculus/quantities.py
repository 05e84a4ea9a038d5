"""What the first-step calculus predicts and the verifier measures: quantities and their targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sympy

__all__ = ["ACTIVATION_MOMENTS", "ETA", "QUANTITIES", "FiniteWidthNote", "Prediction", "Quantity"]

#: The global learning rate (every ``lr`` factor multiplies it). Not a valid width name, so it can
#: never collide with a spec's symbols; its Theta-exponent is 0.
ETA = sympy.Symbol("η", positive=True)
ZERO = sympy.Integer(0)
ONE = sympy.Integer(1)

#: ``(c_f, c_b, c_4)`` for ``z ~ N(0, 1)``: ``c_f = sqrt(E phi(z)^2)`` shrinks a feature of RMS 1,
#: ``c_b = sqrt(E phi'(z)^2)`` a backward signal or a generic change, ``c_4 = sqrt(E phi'^4 / E phi'^2)``
#: a change along the backward signal (numerical quadrature; exact for ReLU and the identity).
#: Width-independent constants: they move no exponent, only where finite-width crossovers fall.
ACTIVATION_MOMENTS: dict[str, tuple[sympy.Expr, sympy.Expr, sympy.Expr]] = {
    "relu": (sympy.sqrt(2) / 2, sympy.sqrt(2) / 2, ONE),
    "gelu": (sympy.Float("0.65209"), sympy.Float("0.67517"), sympy.Float("0.97569")),
    "tanh": (sympy.Float("0.62793"), sympy.Float("0.68147"), sympy.Float("0.85754")),
    "silu": (sympy.Float("0.59647"), sympy.Float("0.61602"), sympy.Float("0.86902")),
    "identity": (ONE, ONE, ONE),
}


@dataclass(frozen=True)
class Quantity:
    """A measurable quantity: what it is, what it is measured on, and the paper's target for it.

    ``subject`` is ``layer`` (features at a weight layer's output), ``tensor`` (a parameter tensor) or
    ``final`` (the last weight layer only). ``target`` names the condition that fixes its exponent:
    ``desideratum`` (Desideratum 1: RMS Theta(1)), ``condition`` (Condition 1:
    ``sqrt(fan_out / d_in)``), ``logits`` (attention logits Theta(1), TP5 Definition 4.1), or ``None``
    (reported, not judged).
    """

    key: str
    title: str
    subject: Literal["layer", "tensor", "final"]
    step: Literal["init", "update"]
    target: Literal["desideratum", "condition", "logits"] | None
    reference: str


QUANTITIES: dict[str, Quantity] = {
    q.key: q
    for q in (
        Quantity("rms_h", "RMS(h)", "layer", "init", "desideratum", "Desideratum 1"),
        Quantity("rms_dh", "RMS(dh)", "layer", "update", "desideratum", "Desideratum 1; Sec. 4"),
        Quantity("feature_change", "||dh||/||h||", "layer", "update", None, "Eq. 23, Fig. 2A"),
        Quantity("spectral_norm", "||W||_*", "tensor", "init", "condition", "Condition 1"),
        Quantity("update_norm", "||dW||_*", "tensor", "update", "condition", "Condition 1"),
        Quantity("relative_update", "||dW||_*/||W||_*", "tensor", "update", None, "Fig. 2B"),
        Quantity("relative_frobenius", "||dW||_F/||W||_F", "tensor", "update", None, "Fig. 2D"),
        Quantity("stable_rank", "srank(dW)", "tensor", "update", None, "Fig. 1, Lemma 1"),
        Quantity("alignment", "final-layer alignment", "final", "update", None, "Eq. 24, Fig. 2C"),
        # Structured architectures (measured where the model has them; see target_exponents).
        Quantity("rms_dwh", "RMS(dW h)", "final", "update", "desideratum", "Sec. 4; Eq. 9-10"),
        Quantity("rms_stream", "RMS(x) stream", "layer", "init", "desideratum", "Desideratum 1"),
        Quantity("rms_dstream", "RMS(dx) stream", "layer", "update", "desideratum", "Desideratum 1"),
        Quantity("rms_logits", "RMS(logits)", "layer", "init", "logits", "TP5 Def. 4.1"),
        Quantity("rms_dlogits", "RMS(d logits)", "layer", "update", "logits", "TP5 Def. 4.1"),
    )
}


@dataclass(frozen=True)
class Prediction:
    """The calculus' prediction for one quantity on one layer or tensor.

    ``expr`` is a sympy expression in the width symbols and :data:`ETA`; ``exponent`` its
    Theta-exponent (``None`` when identically zero); ``target`` the exponent Desideratum 1 or
    Condition 1 asks for (``None`` when the quantity is only reported).
    """

    quantity: str
    subject: str
    expr: sympy.Expr
    exponent: sympy.Rational | None
    target: sympy.Rational | None
    hidden: bool = True


@dataclass(frozen=True)
class FiniteWidthNote:
    """Why a layer's finite-width numbers are not yet on their asymptotic power law."""

    layer: str
    message: str


