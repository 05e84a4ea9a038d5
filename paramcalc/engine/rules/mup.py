"""Maximal update parametrization (muP), relative to base widths, as used for hyperparameter transfer.

This is TP5 (Yang et al. 2021, "Tensor Programs V") Table 3 written with width *multipliers*
``m_in = d_in / d_in(base)`` and ``m_out = fan_out / fan_out(base)``, as the ``mup`` package
implements it: at the base widths every factor is that of standard parametrization, so a learning
rate tuned at base transfers unchanged. Roles follow the counting rule (which of ``d_in``,
``fan_out`` grow):

=====================  ====================  =============  ===============
role                   init_std              SGD lr         Adam lr
=====================  ====================  =============  ===============
input, biases, gains   gain/sqrt(d_in)       m_out          1
hidden                 gain/sqrt(d_in)       m_out / m_in   1 / m_in
output                 gain/sqrt(d_in*m_in)  1 / m_in       1 / m_in
fixed                  gain/sqrt(d_in)       1              1
=====================  ====================  =============  ===============

The learning rates are the spectral ones divided by their value at base widths
(``(fan_out/d_in) / (fan_out/d_in)|base`` for SGD, ``d_in|base / d_in`` for Adam), so their
Theta-exponents equal the spectral ones; the init differs from spectral only by the finite-width
``min(1, sqrt(fan_out/d_in))`` that TP5 replaces by its limit (1 for input and hidden layers,
``1/sqrt(m_in)`` relative to base for the readout).

Attention logits are scaled by ``sqrt(d_head(base)) / d_head``: ``1/d_head`` as TP5 Definition 4.1
asks (queries and keys become correlated, so ``q . k`` grows like ``d_head``), times the constant
that makes it ``1/sqrt(d_head)``, the SP scale, at the base width (the ``mup`` README's
``8/d`` for ``d_head = 64``).

Forms. ``table3`` (the default) puts everything in init and learning rate, with no forward
multiplier: nothing in the model's forward pass changes, checkpoints and any optimizer keep working.
``table8`` is TP5 Table 8's form with an output multiplier ``1/m_in`` (what ``mup.MuReadout``
does); it is the same training dynamics, moved by the abc-symmetry with ``t = 1/m_in``: init
``gain * sqrt(m_in / d_in)``, SGD lr ``m_in``, Adam lr 1. Use it when a tensor has two roles (tied
embeddings) or when matching the ``mup`` package parameter by parameter.
"""

from __future__ import annotations

import sympy

from paramcalc.conditions import abc_shift
from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.optimizers.base import lr_for
from paramcalc.engine.rules.base import Scales, TensorShape
from paramcalc.engine.rules.spectral import RULE as SPECTRAL

ONE = sympy.Integer(1)


class MuP:
    name = "mup"
    title = "muP"
    titles = {"latex": r"$\mu$P", "html": "&#956;P"}
    forms = ("table3", "table8")
    #: Gradients obey Condition 1, so Adam's epsilon gets its factor (:mod:`paramcalc.engine.factors`).
    scales_eps = True

    def scales(self, shape: TensorShape, optimizer: Optimizer, form: str) -> Scales:
        m_in = shape.d_in / shape.d_in_base
        spectral_lr = lr_for(optimizer, SPECTRAL.target_norm(shape), shape.d_in, shape.fan_out, shape.stored)
        base = TensorShape(
            shape.d_in_base, shape.fan_out_base, shape.d_in_base, shape.fan_out_base,
            shape.role, shape.gain, shape.stored_base, shape.stored_base,
        )
        base_lr = lr_for(optimizer, SPECTRAL.target_norm(base), base.d_in, base.fan_out, base.stored)
        lr = spectral_lr / base_lr
        init_std = shape.gain / sympy.sqrt(shape.d_in)
        if shape.role != "output":
            return Scales(init_std, lr, ONE)
        init_std = init_std / sympy.sqrt(m_in)
        if form == "table8":
            mult, std, _, shifted_lr = abc_shift(ONE, init_std, ONE, lr, 1 / m_in, optimizer.symmetry_power)
            return Scales(std, shifted_lr, mult)
        return Scales(init_std, lr, ONE)

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        return sympy.sqrt(d_head_base) / d_head


RULE = MuP()
