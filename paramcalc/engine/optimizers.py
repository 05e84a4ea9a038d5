"""Update-size laws: how large a step each optimizer takes, in spectral norm.

These laws are the only place where the optimizer enters the math. For a weight ``W`` mapping
``d_in -> fan_out`` trained with learning rate ``lr``:

SGD
    ``dW = -lr * G`` with ``G = g h^T`` (batch size 1: rank one, paper Eq. 6), so
    ``||dW||_* = lr * ||g||_2 * ||h||_2``. Under a parametrization that satisfies Condition 1 the
    gradient itself has ``||G||_* = Theta(sqrt(d_in / fan_out))`` (paper Eq. 20: a Theta(1) change
    of the loss needs ``<dW, G> = ||dW||_* ||G||_*`` to be Theta(1)). Hitting a target
    ``||dW||_* = T`` therefore takes ``lr = T * sqrt(fan_out / d_in)``.

Adam
    Adam (and its momentum-free limit, sign descent) normalises each entry: ``dW ~ -lr * sign(G)``,
    whose entries have size ``lr`` whatever the gradient's scale. For a rank-one ``G = g h^T``,
    ``sign(G) = sign(g) sign(h)^T`` is rank one with ``||sign(g)||_2 = sqrt(fan_out)`` and
    ``||sign(h)||_2 = sqrt(d_in)``, so ``||dW||_* = lr * sqrt(fan_out * d_in)``. (For a one-hot
    input only the Theta(1) columns of the tokens seen move, so ``d_in = 1``, App. E.) Hitting
    ``T`` takes ``lr = T / sqrt(fan_out * d_in)``; with the spectral target
    ``T = sqrt(fan_out / d_in)`` that is ``lr = 1 / d_in``. Paper Sec. 3.3 and App. B extend the
    rank-one argument to batches and to any entrywise optimizer.

abc-symmetry (TP5 Lemma J.1)
    Writing the effective weight as ``a * w`` with ``w ~ N(0, b^2)`` and learning rate ``c``, the
    change ``(a, b, c) -> (a*t, b/t, c/t**p)`` leaves training unchanged, with ``p = 2`` for SGD
    (the gradient of ``w`` carries one factor ``a`` and the update acts through another) and
    ``p = 1`` for Adam (its update ignores the gradient's scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from paramcalc.errors import lookup

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer"]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's update-size law and its exponent in the abc-symmetry."""

    name: str
    title: str
    symmetry_power: int
    entrywise_normalized: bool

    def update_norm(
        self, lr: sympy.Expr, grad_norm: sympy.Expr, d_in: sympy.Expr, fan_out: sympy.Expr
    ) -> sympy.Expr:
        """``||dW||_*`` after one step, for a rank-one gradient of spectral norm ``grad_norm``."""
        if self.entrywise_normalized:
            return lr * sympy.sqrt(fan_out * d_in)
        return lr * grad_norm

    def lr_for_update(
        self, target: sympy.Expr, d_in: sympy.Expr, fan_out: sympy.Expr
    ) -> sympy.Expr:
        """The learning rate giving ``||dW||_* = target`` when gradients obey Condition 1."""
        if self.entrywise_normalized:
            return target / sympy.sqrt(fan_out * d_in)
        return target * sympy.sqrt(fan_out / d_in)


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("sgd", "SGD", symmetry_power=2, entrywise_normalized=False),
    "adam": Optimizer("adam", "Adam", symmetry_power=1, entrywise_normalized=True),
}


def get_optimizer(name: str) -> Optimizer:
    return lookup(OPTIMIZERS, name, "optimizer")
