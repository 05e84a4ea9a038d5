"""Optimizers torch does not ship, as plain torch code: :class:`Lion`.

The emitted torch code carries the source of each class it needs (``--emit torch`` copies
:class:`Lion` from this file, so the generated module still imports only ``math`` and ``torch``).
"""

from __future__ import annotations

import torch

__all__ = ["Lion"]


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

    Each step, with ``c = b1 * m + (1 - b1) * g``: ``p <- p * (1 - lr * weight_decay) - lr * sign(c)``,
    then ``m <- b2 * m + (1 - b2) * g``. Every entry of the step has size ``lr``; the decay is
    decoupled, as AdamW's.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        if lr < 0 or not all(0.0 <= b < 1.0 for b in betas) or weight_decay < 0:
            raise ValueError(f"Lion needs lr >= 0, betas in [0, 1), weight_decay >= 0; got {lr}, {betas}, "
                             f"{weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m.mul(b1).add(p.grad, alpha=1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss
