"""First-step scaling calculus: how big features, weights and updates are, for any parametrization.

Given a :class:`~paramcalc.engine.Derivation` of a *chain* (``x -> W_1 -> act -> W_2 -> ... -> W_L``,
norms allowed in between), this module propagates l2 norms through one gradient step, the setting
of the paper's Section 3.1, and returns per layer and per tensor sympy expressions in the width
symbols: their Theta-exponents (the asymptotic claim) and their numbers at the widths one trains
(the finite-width claim). The verifier (:mod:`paramcalc.verify`) measures the same quantities; it
never derives a scaling itself.

The derivation is first folded (abc-symmetry, TP5 Lemma J.1) so that every tensor computes with its
stored value: effective init std ``sigma_l`` and learning rate ``eta * eta_l`` (``eta`` the global
learning rate, kept as the symbol :data:`ETA`). For a weight ``W_l`` of shape ``n_l x n_{l-1}``
(``d_in`` its input dimension in natural norms: ``n_{l-1}`` for dense inputs, 1 for one-hot inputs,
biases and gains, App. E), and ``h'_l = phi(h_l)``:

Forward, at initialisation (Claim 1; Assumption 2: the activation keeps the norm up to
``c_f = sqrt(E phi(z)^2)``, ``z ~ N(0, 1)``)::

    ||x||            = sqrt(n_0)  (dense input)      or 1 (one-hot input)
    ||h_l||          = sigma_l sqrt(n_l) ||h'_{l-1}||   (+ sigma_b sqrt(n_l) for a normal-init bias)
    ||W_l||_*        = sigma_l (sqrt(n_l) + sqrt(n_{l-1}))   (Rudelson & Vershynin 2010; Sec. 4)

Backward, at initialisation (``g_l`` the loss gradient at layer l's output, per example;
``c_b = sqrt(E phi'(z)^2)``)::

    ||g_L||          = 2 sqrt(||f||^2 + n_L) / n_L   (MSE, mean over outputs, targets of RMS 1
                       independent of the output f at init; 2 sqrt(n_L) / n_L when the loss sees
                       the centered output f - f_0)      or 1 (cross-entropy)
    ||g_{l-1}||      = c_b sigma_l sqrt(n_{l-1}) ||g_l||     (W^T g for g independent of W)

Update sizes come from the optimizer's update-size law (:meth:`Optimizer.update_norm`, the only
place the optimizer enters): SGD's gradient ``g_l h'_{l-1}^T`` is rank one and aligned (Eq. 6, Claim
2), ``||dW_l||_* = eta_l ||g_l|| ||h'_{l-1}||``; Adam's sign-like update has
``||dW_l||_* = eta_l sqrt(n_l d_in)`` (Sec. 3.3). Biases and gains are ``n x 1`` matrices whose input is
the constant 1 (App. D) or the normalised feature of RMS 1.

Feature changes, Eq. 9: ``dh_l = dW_l h'_{l-1} + W_l dh'_{l-1}`` (+ ``db_l``; the second-order
``dW dh`` is dropped). Eq. 5 bounds the second term by ``||W_l||_* ||dh'_{l-1}||``; the size it actually
has follows from where ``dh`` points. A first-step change is driven by the backward signal: every
term that a layer's own update adds, ``dW_l h' = -eta_l g_l ||h'||^2`` and ``db_l``, lies along
``g_l`` (Claim 2). So the calculus tracks each change in two parts, ``a`` along the backward signal
and ``r`` generic (independent of the next weight), ``||dh|| = sqrt(a^2 + r^2)``. For a Gaussian
``W`` (``m x p``, entries of std ``sigma``) and ``D`` the activation's derivative, squared::

    E ||W D W^T g||^2 = sigma^4 ||g||^2 (m p E[d^2] + p^2 E[d]^2),

of which ``sigma^2 p E[phi'^2] ||g||`` lies along ``g``. Hence, through ``W_l``::

    a_l = c_b sigma_l sqrt(n_{l-1}) a_{l-1} + ||dW_l||_* ||h'_{l-1}|| + ||db_l||     (along g_l)
    r_l = sigma_l sqrt(n_l) sqrt(c_4^2 a_{l-1}^2 + c_b^2 r_{l-1}^2)                  (generic: Claim 1)

with ``c_4 = sqrt(E phi'^4 / E phi'^2)`` (1 for ReLU). Both gains are at most ``||W_l||_*``, so the
Theta-exponents are those of Eq. 5's bound (the paper's argument that it is tight); the split fixes
the constants, which decide where terms of different exponents cross at finite width (e.g. under SP
the first layer's change, through ``n_0 = 3072``, against the hidden layer's own ``n``). A norm layer
maps its input to RMS 1 (times its gain): it rescales both parts, and the backward signal, by
``sqrt(dim) / ||h||``.

Sums are kept as sums: their Theta-exponent is the largest term's (:func:`theta_exponent`), and their
numbers show where a fixed dimension still dominates at the widths one trains. For the paper's MLP
(``n_0 = 3072``, hidden ``n``, output 1) the exponent of RMS(dh) at the hidden layers is 0 under
spectral and muP (Desideratum 1), -1/2 under NTP with SGD (Sec. 5.3, Lee et al. 2019) and +1/2 at the
second layer under SP with SGD (it blows up, Sec. 5.2); under NTP with Adam the hidden features move
at the right size but the readout, initialised ``sqrt(n)`` above Condition 1, makes the output
change grow like ``n^(1/2)``.

The calculus is per example (Sec. 3.1). A batch of ``B`` examples (Assumptions 3-4) changes
constants, and later steps (Assumption 1) too, not exponents, so the first-step calculus is what a
few measured steps are compared against. Constants matter where terms of different exponents cross:
under Muon a batch's orthogonalised update keeps each example's full step while AdamW's sign update
(its partner's) spreads over the batch, so the two parts of a feature change weigh differently than
per example (measured in docs/verify.md, "Muon and the batch").

Where the batch's mean gradient mixes the network's own output at init with the targets, the
verifier trains the centered output ``f - f_0`` (Chizat et al. 2019), whose gradient at init is
``-2y/n_L`` at every width (``centered=True`` here); the measurements behind that choice are in
``docs/calculus.md``.

The chain is the spec's forward plan (:mod:`paramcalc.spec.topology`): the same steps the torch
model runs, so the activation sits where it does in the trained model. Each step asks its layer's
kind (:mod:`paramcalc.kinds`) what is particular to it: whether a weight's input is dense, and for a
gain layer (a norm) the factor it applies to the forward signal, the backward signal and a change
passing through, and the RMS of the input its gain multiplies.

>>> import paramcalc
>>> from paramcalc.engine.calculus import scaling
>>> spec = {"name": "m", "widths": {"n0": 3072, "d": {"base": 256}, "n_out": 1}, "layers": [
...     {"name": "fc1", "fan_in": "n0", "fan_out": "d"}, {"name": "fc2", "fan_in": "d", "fan_out": "d"},
...     {"name": "head", "fan_in": "d", "fan_out": "n_out"}]}
>>> s = scaling(paramcalc.derive(spec, "ntp", "sgd"))
>>> s.exponent("rms_dh", "fc2")
-1/2
>>> scaling(paramcalc.derive(spec, "mup", "sgd")).exponent("rms_dh", "fc2")
0
"""

from paramcalc.engine.calculus.chain import NotAChain, chain_problems, scaling
from paramcalc.engine.calculus.quantities import (
    ACTIVATION_MOMENTS,
    ETA,
    QUANTITIES,
    FiniteWidthNote,
    Prediction,
    Quantity,
)
from paramcalc.engine.calculus.residual import depth_quantities, residual_problems
from paramcalc.engine.calculus.scaling import Scaling, local_scaling
from paramcalc.engine.calculus.targets import target_exponents

__all__ = [
    "ACTIVATION_MOMENTS",
    "ETA",
    "QUANTITIES",
    "FiniteWidthNote",
    "NotAChain",
    "Prediction",
    "Quantity",
    "Scaling",
    "chain_problems",
    "depth_quantities",
    "local_scaling",
    "residual_problems",
    "scaling",
    "target_exponents",
]
