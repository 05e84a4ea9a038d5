"""The spectral parametrization (paper Parametrization 1), exact finite-width form.

Condition 1 in natural norms asks ``||W||_* = Theta(sqrt(fan_out / d_in))`` and the same of every
update ``dW`` (App. E: ``d_in = 1`` for one-hot inputs, biases and gains).

Init. A Gaussian ``fan_out x d_in`` matrix of entry std ``s`` has
``||W||_* ~ s (sqrt(fan_out) + sqrt(d_in))`` (Rudelson & Vershynin 2010). Setting that to
``sqrt(fan_out / d_in)`` and keeping the larger root gives, within a factor 2,

    init_std = gain / sqrt(d_in) * min(1, sqrt(fan_out / d_in))

which is Parametrization 1 with its Theta written out (``gain``, e.g. ``sqrt(2)`` for ReLU, is the
paper's width-independent prefactor, Sec. 4). For ``fan_out < d_in`` (a readout, or the first layer
of an MLP narrower than its input) the ``min`` shrinks the layer so that its spectral norm, not
just its typical entry, has the target size.

Learning rate. The optimizer's update-size law (:mod:`paramcalc.engine.optimizers`) turns the
target ``||dW||_* = sqrt(fan_out / d_in)`` into ``lr = fan_out / d_in`` for SGD (Parametrization 1)
and ``lr = 1 / d_in`` for Adam.

Attention. After training, queries and keys are correlated (their updates are aligned, as every
update is), so ``q . k`` grows like ``d_head`` rather than the ``sqrt(d_head)`` of independent
vectors; the logit scale ``1/d_head`` keeps logits Theta(1) (TP5 Sec. 4 and Definition 4.1, and the
paper's conclusion on structured architectures).

No multipliers: the form is absolute, so a global learning rate tuned at any width transfers. At
``d_in = fan_out = n`` (hidden layers) it coincides with muP; for a 3-layer ReLU MLP with
``gain = sqrt(2)`` and ``d >= n0`` it gives exactly the muP constants of the paper's App. A.
"""

from __future__ import annotations

import sympy

from paramcalc.conditions import condition1
from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.optimizers.base import lr_for
from paramcalc.engine.rules.base import Scales, TensorShape

ONE = sympy.Integer(1)


def min_one(x: sympy.Expr) -> sympy.Expr:
    """``Min(1, x)``, decided when ``x`` is a number, else kept as written.

    (sympy's own ``Min`` tries to compare symbolic arguments, which costs ~20 ms a call.)
    """
    if x.is_number:
        return ONE if x >= ONE else x
    return sympy.Min(ONE, x, evaluate=False)


class Spectral:
    name = "spectral"
    title = "Spectral"
    titles = {"markdown": "spectral", "html": "spectral"}
    forms = ("default",)
    #: Gradients obey Condition 1, so Adam's epsilon gets its factor (:mod:`paramcalc.engine.factors`).
    scales_eps = True

    def target_norm(self, shape: TensorShape) -> sympy.Expr:
        """Condition 1: the spectral norm asked of ``W`` and of every ``dW``."""
        return condition1(shape.fan_out, shape.d_in)

    def scales(self, shape: TensorShape, optimizer: Optimizer, form: str) -> Scales:
        # With d_in = 1 (biases, gains, one-hot inputs) the min is 1: fan_out >= 1 is a dimension.
        shrink = ONE if shape.d_in == ONE else min_one(self.target_norm(shape))
        init_std = shape.gain / sympy.sqrt(shape.d_in) * shrink
        lr = lr_for(optimizer, self.target_norm(shape), shape.d_in, shape.fan_out, shape.stored)
        return Scales(init_std, lr, ONE)

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        return 1 / d_head


RULE = Spectral()
