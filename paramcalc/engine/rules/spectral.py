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

The feature-preserving first layer (``init: features`` on a layer, the paper's App. A). Where the
input dimension ``d_in`` is fixed (data: pixels, a feature vector) and ``fan_out`` scales, the
shrink is ``sqrt(fan_out / d_in)`` only while the width is below ``d_in`` and 1 from there on: a
finite-width constant, not part of the Theta. It also does something the layer may not want. The
input ``x`` is data, not a vector the weights have been aligned with, and a random ``W`` maps it to
``||W x|| ~ std * sqrt(fan_out) * ||x||`` whatever its spectral norm, so with the shrink the first
layer's features have RMS ``gain * sqrt(fan_out / d_in) * rms(x)``: they shrink with the width below
``d_in``, and every later layer sees the small features. ``init: features`` drops the shrink there
(``init_std = gain / sqrt(d_in)``): features of RMS ``gain * rms(x)`` at every width, and
``||W||_* ~ gain * (1 + sqrt(fan_out / d_in))`` exceeds Condition 1's ``sqrt(fan_out / d_in)`` by
at most ``1 + sqrt(d_in / fan_out)``, a constant bounded by ``d_in`` alone. For the 3-layer ReLU MLP
of Sec. 6 (``gain = sqrt(2)``) it gives exactly App. A's muP constants at every width: ``sigma_1 =
sqrt(2 / n0)`` where the shrink gave ``sqrt(2 d) / n0`` below ``d = n0`` (0.07x at ``d = 16``,
``n0 = 3072``). Which to use: ``features`` for a first layer on data whose narrow models should
train like the wide ones (a width sweep that starts below the input dimension, as Figure 2 does);
the default where the shrink is the rule (readouts, and any layer whose input dimension scales,
where ``init: features`` is refused). Once the width passes ``d_in`` the two are the same.
Learning rates are unchanged by it.

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
        keep = shape.d_in == ONE or shape.init_form == "features"
        shrink = ONE if keep else min_one(self.target_norm(shape))
        init_std = shape.gain / sympy.sqrt(shape.d_in) * shrink
        lr = lr_for(optimizer, self.target_norm(shape), shape.d_in, shape.fan_out, shape.stored)
        return Scales(init_std, lr, ONE)

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        return 1 / d_head


RULE = Spectral()
