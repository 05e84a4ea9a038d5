"""The paper's conditions, in one place: what every rule, the calculus and the verifier ask of a tensor.

Natural norms (App. E)
    A tensor maps an input space of dimension ``d_in`` to ``fan_out``: ``d_in = fan_in`` for a dense
    input, and ``d_in = 1`` for one-hot (sparse) inputs, for biases (whose input is the constant 1,
    App. D) and for gains (whose input is a feature of RMS 1). :func:`natural_d_in`.

Roles (the counting rule of TP5 and the ``mup`` package)
    Which of ``d_in`` and ``fan_out`` grow with width: input (only fan_out), hidden (both), output
    (only d_in), fixed (neither). :func:`role`.

Condition 1
    ``||W||_* = Theta(sqrt(fan_out / d_in))`` for every weight and every update ``dW``.
    :func:`condition1`.

Desideratum 1
    Every hidden feature and its change per step have RMS Theta(1): Theta-exponent
    :data:`FEATURE_EXPONENT`.

The Gaussian spectral-norm law (Rudelson & Vershynin 2010)
    A ``rows x cols`` matrix of iid entries of std ``s`` has ``||W||_* ~ s (sqrt(rows) + sqrt(cols))``.
    :func:`gaussian_spectral_norm`. It is one law used in two norms, which is why its callers pass
    different ``cols``: the first-step calculus and the verifier predict and measure the plain
    l2 operator norm of the *stored* matrix, ``cols = fan_in`` (an embedding ``50257 x d``'s norm
    carries ``sqrt(50257)``); the spectral rule sizes its init in natural norms, ``cols = d_in``,
    where a one-hot input's operator norm is the largest column norm, ``s sqrt(fan_out)``, within a
    factor 2 of ``s (sqrt(fan_out) + 1)``. They agree for dense inputs and differ only for one-hot
    ones.

The abc-symmetry (TP5 Lemma J.1)
    Writing the effective weight as ``a * w`` with ``w ~ N(m, b^2)`` and learning rate ``c``, the
    change ``(a, b, m, c) -> (a t, b / t, m / t, c / t^p)`` leaves training unchanged (exactly for SGD,
    ``p = 2``; for Adam up to its epsilon, ``p = 1``). :func:`abc_shift`; folding a multiplier into
    init and learning rate is the shift with ``t = 1 / multiplier``.
"""

from __future__ import annotations

from typing import Literal

import sympy

from paramcalc.symbolic import theta_exponent

__all__ = [
    "FEATURE_EXPONENT",
    "abc_shift",
    "condition1",
    "gaussian_spectral_norm",
    "natural_d_in",
    "role",
]

Role = Literal["input", "hidden", "output", "fixed"]
ONE = sympy.Integer(1)
#: Desideratum 1: the Theta-exponent in width of a hidden feature's RMS and of its change's.
FEATURE_EXPONENT = sympy.Integer(0)


def natural_d_in(fan_in: sympy.Expr, input: str) -> sympy.Expr:
    """``d_in`` in natural norms: ``fan_in`` for a dense input, 1 otherwise (one-hot, constant)."""
    return fan_in if input == "dense" else ONE


def role(d_in: sympy.Expr, fan_out: sympy.Expr, scaling: frozenset[sympy.Symbol]) -> Role:
    """The counting rule: which of ``d_in`` and ``fan_out`` grow with the ``scaling`` widths."""
    scales_in = (theta_exponent(d_in, scaling) or 0) > 0
    scales_out = (theta_exponent(fan_out, scaling) or 0) > 0
    if scales_in and scales_out:
        return "hidden"
    if scales_out:
        return "input"
    if scales_in:
        return "output"
    return "fixed"


def condition1(fan_out: sympy.Expr, d_in: sympy.Expr) -> sympy.Expr:
    """Condition 1's target for ``||W||_*`` and ``||dW||_*``: ``sqrt(fan_out / d_in)``."""
    return sympy.sqrt(fan_out / d_in)


def gaussian_spectral_norm(std: sympy.Expr, rows: sympy.Expr, cols: sympy.Expr) -> sympy.Expr:
    """``||W||_*`` of a ``rows x cols`` Gaussian matrix of entry std ``std``:
    ``std (sqrt(rows) + sqrt(cols))``."""
    return std * (sympy.sqrt(rows) + sympy.sqrt(cols))


def abc_shift(
    multiplier: sympy.Expr, init_std: sympy.Expr, init_mean: sympy.Expr, lr: sympy.Expr, t: sympy.Expr,
    power: int,
) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr, sympy.Expr]:
    """TP5 Lemma J.1: ``(multiplier t, init_std / t, init_mean / t, lr / t**power)``."""
    return multiplier * t, init_std / t, init_mean / t, lr / t**power
