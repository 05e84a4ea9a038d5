"""Lion's update-size law (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Lion steps by the sign of an interpolation of its momentum and the gradient,
``dW = -lr * sign(b1 * m + (1 - b1) * G)`` (plus decoupled decay ``-lr * wd * W``). Every entry of the
step has size exactly ``lr``, whatever the gradient's scale: the entrywise law of Adam and sign
descent (paper Sec. 3.3, App. B). On the first step ``m = 0`` and ``sign(G)`` of a rank-one
``G = g h^T`` is rank one, so ``||dW||_* = lr * sqrt(fan_out * d_in)`` and Condition 1 takes Adam's
learning-rate factors; abc-symmetry power 1. Lion has no epsilon. The constant in front differs
from Adam's (Lion's authors use a learning rate 3-10x smaller than AdamW's), not its width
exponents. torch has no Lion: paramcalc ships one (:class:`paramcalc.optim.Lion`), and the emitted
torch code carries the same class.
"""

from __future__ import annotations

from typing import Any

from paramcalc.engine.optimizers.adam import Adam

__all__ = ["OPTIMIZER", "Lion"]


class Lion(Adam):
    name = "lion"
    title = "Lion"
    torch_class = "Lion"
    optax_constructor = "optax.lion"
    state_tensors = 1
    probe_lr = 1e-4
    has_eps = False
    decoupled_decay = True

    def torch(self, groups: Any, lr: float, **options: Any) -> Any:
        from paramcalc.optim import Lion as TorchLion

        return TorchLion(groups, lr=lr, **options)


OPTIMIZER = Lion()
