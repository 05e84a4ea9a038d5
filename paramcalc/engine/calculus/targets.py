"""The exponents the paper's conditions ask of every measured quantity, for any architecture."""

from __future__ import annotations

import sympy

from paramcalc.conditions import FEATURE_EXPONENT, condition1
from paramcalc.spec import Spec
from paramcalc.symbolic import theta_exponent

__all__ = ["target_exponents"]


def target_exponents(spec: Spec) -> dict[tuple[str, str], sympy.Rational]:
    """The exponents Desideratum 1 and Condition 1 ask for, keyed by ``(quantity, subject)``.

    Desideratum 1: RMS of every hidden feature (each weight layer's output but the last) and of its
    change, exponent 0; the output's change too (Sec. 4: a Theta(1) change of the loss per step).
    Condition 1: ``||W||_*`` and ``||dW||_*`` of every tensor like ``sqrt(fan_out / d_in)``, with
    ``d_in = 1`` for one-hot inputs, biases and gains (App. D, E). Any architecture: no chain needed.

    Structured architectures. The paper's conclusion applies both conditions "directly" to them, and
    App. B proves them for anything a tensor program expresses, transformers and Adam included. The
    targets extend layer by layer, all in natural norms (App. E):

    - a norm's output is a feature (RMS and its change, exponent 0), and so is its input: in a
      pre-norm transformer that is the residual stream (``rms_stream``, ``rms_dstream``), the sum
      of the embeddings and of every residual branch before it;
    - the output's own update ``dW_L h_{L-1}`` (``rms_dwh``, exponent 0): the first term of Eq. 9,
      which gives the output change its lower bound (Eq. 10), while Eq. 5 bounds the whole change
      from above;
    - a tied use (``tie:``): the layer computes with ``multiplier * W``, another layer's tensor seen in
      the use's own shape, and that matrix is held to Condition 1 *for the use*, keyed
      ``"<layer>.weight"``: a readout ``lm_head`` tied to ``wte`` asks ``||mu W||_*`` and
      ``||mu dW||_*`` like ``sqrt(vocab / d_model)`` while ``wte.weight`` as an embedding asks
      ``sqrt(d_model)``. Meeting both at once is what the tie's multiplier ``mu`` is for
      (:mod:`paramcalc.engine.ties`);
    - attention logits, per attention layer (``rms_logits``, ``rms_dlogits``, exponent 0). A logit is
      ``scale * q . k`` summed over ``d_head`` coordinates. At init ``q`` and ``k`` are independent
      with Theta(1) entries, so ``q . k ~ sqrt(d_head)``; after an update they are correlated (the
      updates of ``W_q`` and ``W_k`` are aligned with the same inputs, Claim 2), so ``q . k`` gains a
      part ``~ d_head``: TP5 Definition 4.1's scale ``1/d_head`` keeps logits Theta(1) as ``d_head``
      grows. Where ``d_head`` is fixed and heads scale (GPT-2's family) every scale is a constant, and
      logits are Theta(1) exactly when the queries, keys and their changes are; when the
      query/key updates grow with width (SP with Adam: hidden ``||dW||_* ~ n``) the logits blow up.
    """
    scaling_symbols = spec.scaling_symbols
    zero = FEATURE_EXPONENT
    weights = [layer.name for layer in spec.weight_layers]
    out: dict[tuple[str, str], sympy.Rational] = {}
    for name in weights:
        if name != weights[-1]:
            out[("rms_h", name)] = zero
        out[("rms_dh", name)] = zero
    if weights:
        out[("rms_dwh", weights[-1])] = zero
    for t in spec.tensors:
        exponent = theta_exponent(condition1(t.fan_out, t.d_in), scaling_symbols)
        out[("spectral_norm", t.name)] = out[("update_norm", t.name)] = exponent
        for use in t.tied_uses:
            exponent = theta_exponent(condition1(use.fan_out, use.d_in), scaling_symbols)
            out[("spectral_norm", f"{use.layer}.weight")] = exponent
            out[("update_norm", f"{use.layer}.weight")] = exponent
    for layer in spec.layers:
        if layer.definition.chain_role == "gain":
            for quantity in ("rms_h", "rms_dh", "rms_stream", "rms_dstream"):
                out[(quantity, layer.name)] = zero
        elif layer.kind == "attention":
            out[("rms_logits", layer.name)] = out[("rms_dlogits", layer.name)] = zero
    return out
