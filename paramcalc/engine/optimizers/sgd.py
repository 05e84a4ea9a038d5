"""SGD's update-size law.

``dW = -lr * G`` with ``G = g h^T`` (batch size 1: rank one, paper Eq. 6), so
``||dW||_* = lr * ||g||_2 * ||h||_2``. Under a parametrization that satisfies Condition 1 the
gradient itself has ``||G||_* = Theta(sqrt(d_in / fan_out))`` (paper Eq. 20: a Theta(1) change of
the loss needs ``<dW, G> = ||dW||_* ||G||_*`` to be Theta(1)). Hitting a target ``||dW||_* = T``
therefore takes ``lr = T * sqrt(fan_out / d_in)``. The gradient carries one factor of a forward
multiplier and the update acts through another: abc-symmetry power 2.

Weight decay in ``torch.optim.SGD`` is an L2 term in the gradient, ``G + wd * W``; with plain SGD
that is the same step as decoupled decay, ``W -> (1 - lr * wd) W``.
"""

from __future__ import annotations

from typing import Any

from paramcalc.engine.optimizers.base import Optimizer

__all__ = ["OPTIMIZER", "SGD"]


class SGD(Optimizer):
    name = "sgd"
    title = "SGD"
    symmetry_power = 2
    torch_class = "SGD"
    optax_constructor = "optax.sgd"

    def update_norm(self, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        return lr * grad_norm

    def lr_for_update(self, target: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        import sympy

        return target * sympy.sqrt(fan_out / d_in)


OPTIMIZER = SGD()
