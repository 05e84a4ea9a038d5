"""Tied tensors: one stored tensor, used by two layers in two roles.

A readout tied to the token embedding uses the embedding's ``vocab x dim`` table as its
``dim -> vocab`` matrix. The tensor has one init and one learning rate (those of its owner, the
layer that declares it), but each use may carry its own forward multiplier ``mu``: the use computes
with ``mu * W``. By the abc-symmetry (TP5 Lemma J.1) the use then trains like a tensor of its own
with learning rate ``lr_owner * mu**p`` (``p`` = 2 for SGD, 1 for Adam) and init
``sigma_owner * mu``.

We choose ``mu`` so that the use's effective learning rate is *exactly* what the rule asks of its
role: ``mu = (lr_use / lr_owner)**(1/p)`` (with both sides folded, multipliers included). This is
TP5 Table 8's answer for tied embeddings: under muP the readout use gets ``1/m`` (what
``mup.MuSharedReadout`` applies), under spectral ``1/d`` for Adam. The init then follows from the
owner's; its Theta-exponent matches the role's under spectral and muP, and we report the gap where
it does not: under SP the learning rates of both roles are equal, so ``mu = 1`` and the readout
keeps the embedding's init, exactly as SP practice (GPT-2) ties weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from paramcalc.conditions import abc_shift
from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.rules import Scales
from paramcalc.spec import TiedUse
from paramcalc.symbolic import theta_exponent

__all__ = ["TiedScale", "tie"]

ONE = sympy.Integer(1)


@dataclass(frozen=True)
class TiedScale:
    """How layer ``layer`` uses tensor ``tensor`` (owned by another layer).

    ``multiplier`` is the forward multiplier of this use (``multiplier * W``); ``lr`` and
    ``init_std`` are the effective learning-rate factor and init std the use trains with, and
    ``rule_init_std`` the init its role would get untied (equal in Theta-exponent under spectral
    and muP; ``init_exponent_gap`` is their exponent difference).
    """

    layer: str
    tensor: str
    use: TiedUse
    multiplier: sympy.Expr
    lr: sympy.Expr
    init_std: sympy.Expr
    rule_init_std: sympy.Expr
    init_exponent_gap: sympy.Rational

    @property
    def role(self) -> str:
        return self.use.role


def tie(
    owner: Scales, use_rule: Scales, use: TiedUse, tensor: str, optimizer: Optimizer,
    scaling: frozenset[sympy.Symbol],
) -> TiedScale:
    p = optimizer.symmetry_power
    # The use computes with mu * W, where W is the stored tensor (init owner.init_std, learning
    # rate owner.lr): it trains like a tensor of effective lr owner.lr * mu**p and init
    # owner.init_std * mu. Match the lr of the use's role, folded to multiplier 1.
    _, want_std, _, want_lr = abc_shift(use_rule.multiplier, use_rule.init_std, ONE, use_rule.lr,
                                        1 / use_rule.multiplier, p)  # folded: multiplier 1
    mu = (want_lr / owner.lr) ** sympy.Rational(1, p)
    std = owner.init_std * mu
    gap = (theta_exponent(std, scaling) or 0) - (theta_exponent(want_std, scaling) or 0)
    return TiedScale(use.layer, tensor, use, mu, want_lr, std, want_std, sympy.Rational(gap))
