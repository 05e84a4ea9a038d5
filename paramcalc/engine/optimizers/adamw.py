"""AdamW's update-size law: Adam's, with decoupled weight decay (Loshchilov & Hutter 2019).

The gradient step is Adam's (``||dW||_* = lr * sqrt(fan_out * d_in)`` for a rank-one gradient,
:mod:`paramcalc.engine.optimizers.adam`), so every learning-rate factor is Adam's. The decay is
separate from the gradient: ``torch.optim.AdamW`` (and ``optax.adamw``) multiply each weight by
``1 - lr * weight_decay`` per step, so what a step decays is the product ``lr * weight_decay`` of the
tensor's group. Under a width-scaled learning rate that product shrinks with width unless weight
decay grows by the inverse factor; :mod:`paramcalc.engine.factors` derives the factor for the
``independent`` policy (the default here, as in mup's ``MuAdamW`` and CompleteP) and the
``coupled`` one (torch's plain ``weight_decay``).
"""

from __future__ import annotations

from paramcalc.engine.optimizers.adam import Adam

__all__ = ["OPTIMIZER", "AdamW"]


class AdamW(Adam):
    name = "adamw"
    title = "AdamW"
    torch_class = "AdamW"
    optax_constructor = "optax.adamw"
    decoupled_decay = True


OPTIMIZER = AdamW()
