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

Finite width. Equal Theta-exponents do not make equal numbers: with the spectral rule under Adam,
``V = 50257`` and ``d = 768``, the embedding's init is 1 and its rate 1, the readout's role asks
init ``1/sqrt(d)`` (``min(1, sqrt(V/d)) = 1`` while ``d < V``) and rate ``1/d``; the multiplier
``1/d`` gives the readout its rate and an init ``1/d``, 28x below its role's. No multiplier gives a
use both its role's rate and its role's init unless the two roles' ratios ``sigma_use / sigma_owner``
and ``(eta_use / eta_owner)**(1/p)`` agree. :func:`tie_gaps` reports the gap at the widths asked
(and the command line warns past 2x).

Which layer owns the tensor. Writing the folded scales of the two roles as ``(sigma_a, eta_a)``
and ``(sigma_b, eta_b)``: with ``a`` owning, ``b``'s use has ``mu = (eta_b/eta_a)**(1/p)`` and
init gap ``g = mu sigma_a / sigma_b``; with ``b`` owning, ``a``'s use has ``1/mu`` and gap
``sigma_b / (mu sigma_a) = 1/g``. The owner does not change the size of the gap, only which role
carries it, and in which direction. Let the embedding own (as Hugging Face models do, ``lm_head``
tied to ``wte``): the readout then starts *smaller* than its role (by ``g < 1`` under spectral and
muP), which only delays its first move (muP practice even starts the readout at zero, TP5 App.
D.2), while a readout owning the table would start the embedding ``1/g`` times too large, and with
it every feature of the residual stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from paramcalc.conditions import abc_shift
from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.rules import Scales
from paramcalc.spec import TiedUse
from paramcalc.symbolic import numeric, theta_exponent

__all__ = ["TieGap", "TiedScale", "gaps_by_ratio", "tie", "tie_gaps"]

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
    #: The optimizer's abc-symmetry power ``p`` (2 for SGD, 1 for Adam): the use trains with
    #: ``lr_owner * multiplier**p``.
    power: int = 1

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
    return TiedScale(use.layer, tensor, use, mu, want_lr, std, want_std, sympy.Rational(gap), p)


@dataclass(frozen=True)
class TieGap:
    """A tied use at concrete widths: what it trains with against what its role asks.

    ``init_std`` and ``lr`` are the effective values of ``multiplier * W`` (the owner's init and
    rate carried through the multiplier); ``rule_init_std`` and ``rule_lr`` are its role's own,
    untied. The owner's role is met exactly (the tensor has the owner's scales).
    """

    layer: str
    tensor: str
    owner: str
    role: str
    init_std: float
    rule_init_std: float
    lr: float
    rule_lr: float

    @property
    def init_ratio(self) -> float:
        return self.init_std / self.rule_init_std if self.rule_init_std else float("nan")

    @property
    def lr_ratio(self) -> float:
        return self.lr / self.rule_lr if self.rule_lr else float("nan")

    @property
    def worst(self) -> float:
        """The larger gap, as a factor >= 1 either way."""
        return max(max(r, 1 / r) for r in (self.init_ratio, self.lr_ratio) if r > 0)

    def describe(self, at: str) -> str:
        way, other = ("below", "above") if self.init_ratio < 1 else ("above", "below")
        factor = 1 / self.init_ratio if self.init_ratio < 1 else self.init_ratio
        return (f"{self.layer} (uses {self.tensor}, owned by {self.owner}): at {at} its effective init std "
                f"{self.init_std:.3g} is {factor:.3g}x {way} what its role ({self.role}) asks "
                f"({self.rule_init_std:.3g}); its learning rate is {self.lr_ratio:.3g}x its role's. No "
                f"multiplier fits both at these widths; tied the other way, {self.owner}'s init would be "
                f"{factor:.3g}x {other} its role's instead (paramcalc/engine/ties.py).")


def tie_gaps(d: Any, at: Mapping[sympy.Symbol, float]) -> dict[str, TieGap]:
    """Each tied use of derivation ``d`` at the width values ``at`` (every symbol's), keyed by layer
    (:meth:`Derivation.tie_gaps <paramcalc.engine.Derivation.tie_gaps>` takes the widths by name)."""
    memo: dict[sympy.Basic, float] = {}
    gaps = {}
    for layer, ts in d.tied.items():
        owner = d[ts.tensor]
        mu = numeric(ts.multiplier, at, memo)
        gaps[layer] = TieGap(
            layer, ts.tensor, owner.tensor.layer, ts.role,
            init_std=numeric(owner.init_std, at, memo) * mu,
            rule_init_std=numeric(ts.rule_init_std, at, memo),
            lr=numeric(owner.lr, at, memo) * mu ** ts.power, rule_lr=numeric(ts.lr, at, memo),
        )
    return gaps


def gaps_by_ratio(
    derivations: Sequence[Any], widths: Mapping[str, int] | None = None, limit: float | None = None
) -> dict[str, tuple[TieGap, dict[str, list[str]]]]:
    """Per tied layer, one of its gaps and the derivations (``param/Optimizer``) grouped by their init
    ratio (3 digits); with ``limit``, only those more than ``limit`` off (as a factor either way)."""
    out: dict[str, tuple[TieGap, dict[str, list[str]]]] = {}
    for d in derivations:
        for layer, gap in d.tie_gaps(widths).items():
            if limit is None or gap.worst > limit:
                _, groups = out.setdefault(layer, (gap, {}))
                name = f"{d.parametrization}/{d.optimizer.title}"
                groups.setdefault(f"{gap.init_ratio:.3g}", []).append(name)
    return out
