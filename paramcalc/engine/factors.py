"""Per-tensor factors beyond the learning rate: Adam's epsilon and weight decay.

Both are factors on a value the user tunes at the base widths (``eps``, ``weight_decay``), equal to
1 there, so the tuned values transfer as the learning rate does.

Epsilon (Everett et al. 2024, "Scaling Exponents Across Parameterizations and Optimizers", Sec. 4;
Megatron-LM's muP divides it by the width multiplier)
    Adam steps by ``m / (sqrt(v) + eps)``; its update-size law (``lr sign(G)`` on a first step,
    :mod:`paramcalc.engine.optimizers.adam`) holds while ``eps`` is negligible against the
    gradient's entries ``|G_ij|``, and fails where they shrink below it. Under Condition 1 the
    gradient of a tensor's *effective* weight has ``||G||_* = Theta(sqrt(d_in / fan_out))`` (paper
    Eq. 20) and is rank one on a first step, ``G = g h^T`` with ``||h|| = sqrt(d_in)`` in natural
    units, so its entries are ``||G||_* / sqrt(fan_out d_in) = Theta(1 / fan_out)``: ``1/n`` for
    input and hidden layers, their biases and norm gains, and embedding columns (``d_in = 1``);
    ``Theta(1)`` for a readout onto a fixed number of classes. The stored tensor's gradient carries
    its forward multiplier (``d L / d W = multiplier * G``). So epsilon needs the factor

        eps = (multiplier / fan_out) / (multiplier / fan_out)|base

    which keeps ``eps / |G_ij|`` at its value at the base widths. It also makes the abc-symmetry
    exact for Adam (a shift by ``t`` scales the gradient by ``t`` and ``eps`` with it). Only rules
    whose gradients obey Condition 1 (spectral, muP: ``scales_eps``) get it; SP and NTP are the
    published parametrizations as people run them, with a fixed epsilon (factor 1).

Weight decay (Loshchilov & Hutter 2019; Wortsman et al. 2023; Kosson et al. 2025)
    A decoupled step decays ``W -> (1 - lr * weight_decay) W``: what it does is the product ``lr *
    weight_decay``. Policies:

    - ``independent`` (the default; mup's ``MuAdamW`` multiplies weight decay by the width
      multiplier it divides the learning rate by, and CompleteP does the same): each tensor's
      ``lr * weight_decay`` stays at its value at the base widths, factor ``lr|base / lr``;
    - ``coupled`` (torch's plain ``weight_decay``, Megatron): factor 1, so ``lr * weight_decay``
      shrinks where the learning rate does (by ``1/m`` on hidden matrices under muP with Adam).

    Only the tensor kinds in ``decay`` are decayed (factor 0 for the others): by default ``weight``,
    the weight matrices and convolution kernels; ``embedding`` (tables read by ids), ``gain`` (norm
    gains) and ``bias`` (biases and raw parameters) when asked, as is common practice (torch's
    default would decay them all). Fan et al. 2025 argue for ``weight_decay ~ sqrt(width)`` on
    matrices instead; neither policy here is that. Under the abc-symmetry weight decay moves as
    ``weight_decay * t**p``, keeping ``lr * weight_decay`` (:func:`shifted`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sympy

__all__ = ["DECAY_KINDS", "POLICIES", "check_policy", "decay_kind", "eps_factor", "partner_lr_ratio",
           "shifted", "weight_decay_factor"]

ONE = sympy.Integer(1)
ZERO = sympy.Integer(0)
#: Weight-decay policies.
POLICIES = ("independent", "coupled")
#: The tensor kinds weight decay can be asked for.
DECAY_KINDS = ("weight", "embedding", "gain", "bias")


def check_policy(policy: str, decay: Collection[str]) -> None:
    """Raise ``ValueError`` for an unknown policy or decay kind."""
    if policy not in POLICIES:
        raise ValueError(f"weight_decay must be one of {', '.join(POLICIES)}; got {policy!r}")
    unknown = sorted(set(decay) - set(DECAY_KINDS))
    if unknown or isinstance(decay, str):
        raise ValueError(f"decay names tensor kinds among {', '.join(DECAY_KINDS)}; got {unknown or decay!r}")


def eps_factor(
    multiplier: sympy.Expr, fan_out: sympy.Expr, base: Mapping[sympy.Symbol, sympy.Expr]
) -> sympy.Expr:
    """Adam's epsilon factor: the stored gradient's entry size ``multiplier / fan_out`` over its
    value at the base widths (``base`` maps each scaling symbol to its base)."""
    entry = multiplier / fan_out
    return entry / entry.xreplace(base)


def decay_kind(tensor: object, reads_ids: bool) -> str:
    """``weight``, ``embedding`` (a weight read by ids), ``gain`` or ``bias`` (biases and raw
    parameters), the kinds ``decay`` names."""
    kind = tensor.kind
    if tensor.layout == "param":
        return "bias"
    if kind == "weight":
        return "embedding" if reads_ids else "weight"
    return kind


def weight_decay_factor(
    lr: sympy.Expr, base: Mapping[sympy.Symbol, sympy.Expr], kind: str, policy: str,
    decay: Collection[str],
) -> sympy.Expr:
    """The factor on the user's weight decay for one tensor (see the module docstring)."""
    if kind not in decay:
        return ZERO
    if policy == "coupled":
        return ONE
    return lr.xreplace(base) / lr


def shifted(eps: sympy.Expr, weight_decay: sympy.Expr, t: sympy.Expr, power: int, has_eps: bool) -> tuple[
        sympy.Expr, sympy.Expr]:
    """Epsilon and weight-decay factors after an abc-shift by ``t`` (TP5 Lemma J.1): the stored
    gradient scales by ``t``, so does epsilon; ``lr / t**p`` takes ``weight_decay * t**p``."""
    return (eps * t if has_eps else eps), weight_decay * t**power


def partner_lr_ratio(derivation: object) -> float:
    """Under Muon: AdamW's global learning rate as a multiple of Muon's, so that the two make the same
    first-step progress at the base widths (1 when one optimizer trains every tensor).

    Muon moves a hidden matrix by ``lr * f_muon * s(A, B)`` in spectral norm per step, AdamW (a
    first step: ``lr sign(G)``) by ``lr * f_adamw * sqrt(fan_out d_in)``, where ``f`` are the two
    derivations' lr factors. The ratio is the geometric mean over the Muon-trained matrices of the
    first over the second at the base widths: with AdamW's tensors at ``ratio * lr`` the network
    moves as under the same parametrization with AdamW alone. Under spectral both laws meet the same
    target, so the ratio is 1; under muP (factors 1 at base) it is ``s(A, B) / sqrt(fan_out d_in)``,
    about ``1/n`` (the familiar 0.02 for Muon against 3e-4 for AdamW is such a ratio). verify uses it;
    a user tunes the two learning rates as two hyperparameters.
    """
    import math

    from paramcalc.engine.derivation import derive
    from paramcalc.engine.optimizers.base import norm_for
    from paramcalc.engine.rules import get_rule

    d: Any = derivation
    if len(d.laws) < 2:
        return 1.0
    forms = get_rule(d.parametrization).forms
    alone = derive(d.spec, d.parametrization, d.optimizer.partner.name,
                   form=d.form if d.form in forms else None, weight_decay=d.weight_decay, decay=d.decay)
    base = d.spec.base_values
    logs = []
    for name, p in d.items():
        if p.optimizer != d.optimizer.name:
            continue
        t = p.tensor
        mine = norm_for(d.law(name), p.lr, ONE, t.d_in, t.fan_out, t.matrix_shape)
        theirs = norm_for(alone.law(name), alone[name].lr, ONE, t.d_in, t.fan_out, t.matrix_shape)
        logs.append(math.log(float(sympy.sympify(mine / theirs).xreplace(base))))
    return math.exp(sum(logs) / len(logs)) if logs else 1.0


def lr_in_layout(derivation: object, name: str, rows: Any, cols: Any) -> Any:
    """Tensor ``name``'s learning-rate factor for an optimizer that reads its matrix as
    ``(rows, cols)`` where torch reads ``matrix_shape``: the same factor under every law but one that
    reads the layout (Muon's shape factor), where the ratio of the two update norms corrects it.

    The emitted JAX module needs it: optax's Muon reads a flax kernel ``(fan_in, fan_out)`` by its
    axes, as torch reads a ``(fan_out, fan_in)`` weight, so ``rows, cols = fan_out, fan_in`` there;
    torch's Muon reads an ``in_out`` tensor (Hugging Face ``Conv1D``) by ``shape[:2]`` as
    ``(fan_in, fan_out)``, and its factor under ``original`` differs for a non-square matrix
    (GPT-2's ``c_fc``, ``768 x 3072``: torch's shape factor 1, optax's 2).
    """
    from paramcalc.engine.optimizers.base import norm_for

    d: Any = derivation
    p = d[name]
    law, t = d.law(name), p.tensor
    if not getattr(law, "reads_layout", False) or t.layout == "vector":
        return p.lr
    ours = norm_for(law, ONE, ONE, t.fan_in, t.fan_out, t.matrix_shape)
    theirs = norm_for(law, ONE, ONE, t.fan_in, t.fan_out, (rows, cols))
    return sympy.simplify(p.lr * ours / theirs)
