"""Adam's update-size law.

Adam (and its momentum-free limit, sign descent) normalises each entry: ``dW ~ -lr * sign(G)``,
whose entries have size ``lr`` whatever the gradient's scale. For a rank-one ``G = g h^T``,
``sign(G) = sign(g) sign(h)^T`` is rank one with ``||sign(g)||_2 = sqrt(fan_out)`` and
``||sign(h)||_2 = sqrt(d_in)``, so ``||dW||_* = lr * sqrt(fan_out * d_in)``. (For a one-hot input
only the Theta(1) columns of the tokens seen move, so ``d_in = 1``, App. E.) Hitting ``T`` takes
``lr = T / sqrt(fan_out * d_in)``; with the spectral target ``T = sqrt(fan_out / d_in)`` that is
``lr = 1 / d_in``. Paper Sec. 3.3 and App. B extend the rank-one argument to batches and to any
entrywise optimizer. Its update ignores the gradient's scale: abc-symmetry power 1.

The law holds while ``eps`` is negligible against the gradient's entries, which is why epsilon
gets a per-tensor factor (:mod:`paramcalc.engine.factors`). ``torch.optim.Adam``'s
``weight_decay`` is an L2 term added to the gradient before the normalisation, so it is not a
decay rate at all; use AdamW (:mod:`paramcalc.engine.optimizers.adamw`) for decoupled decay.
"""

from __future__ import annotations

from typing import Any

from paramcalc.engine.optimizers.base import Optimizer

__all__ = ["OPTIMIZER", "Adam"]


class Adam(Optimizer):
    name = "adam"
    title = "Adam"
    symmetry_power = 1
    torch_class = "Adam"
    optax_constructor = "optax.adam"
    state_tensors = 2
    probe_lr = 1e-3
    has_eps = True

    def update_norm(self, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        import sympy

        return lr * sympy.sqrt(fan_out * d_in)

    def lr_for_update(self, target: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        import sympy

        return target / sympy.sqrt(fan_out * d_in)


OPTIMIZER = Adam()
