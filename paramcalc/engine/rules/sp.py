"""Standard parametrization (paper Eq. 21): LeCun/Kaiming init and one global learning rate.

``init_std = gain / sqrt(d_in)`` (``d_in = 1`` for one-hot inputs, which is ``nn.Embedding``'s
``N(0, 1)``), ``lr = 1`` for SGD and Adam alike. It exceeds Condition 1 wherever
``fan_out < d_in`` (the readout of a wide network), and its constant learning rate makes hidden
updates grow with width.
"""

from __future__ import annotations

import sympy

from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.rules.base import Scales, TensorShape

ONE = sympy.Integer(1)


class SP:
    name = "sp"
    title = "SP"
    forms = ("default",)

    def scales(self, shape: TensorShape, optimizer: Optimizer, form: str) -> Scales:
        return Scales(shape.gain / sympy.sqrt(shape.d_in), ONE, ONE)

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        """The usual ``1/sqrt(d_head)`` of independent queries and keys."""
        return 1 / sympy.sqrt(d_head)


RULE = SP()
