"""Depth: the factors a residual network needs when its number of blocks ``L`` scales.

A spec makes depth scale with a ``repeat`` whose count is a scaling width (``n_layers: {base: 4}``,
:class:`paramcalc.spec.DepthBlock`). Every block is a residual branch, ``x = x + r * branch(x)``,
with the branch multiplier ``r = m_L^-alpha`` (``m_L = L / L_base``), ``alpha`` in ``[1/2, 1]``:
``alpha = 1`` is CompleteP (Dey et al. 2025, "Don't be lazy", Table 1), ``alpha = 1/2`` depth-muP
(Yang et al. 2023, Tensor Programs VI; Bordelon et al. 2023).

The principle, for any optimizer (its update-size law, :mod:`paramcalc.engine.optimizers`):

- At init each branch adds ``r * Theta(1)`` to the stream, ``L`` roughly independent terms: the
  stream has RMS ``sqrt(1 + L * r^2) = Theta(1)`` for ``alpha >= 1/2``. Init is the width rule's.
- The multiplier scales the gradient of every tensor inside a block by ``r`` (the backward signal
  of the stream is Theta(1) in ``L``, as is its forward signal).
- One step must change each block's contribution ``r * branch(x)`` by ``Theta(1/L)``, so that the
  ``L`` coherent changes add to a Theta(1) change of the stream: the branch itself must change by
  ``Theta(m_L^(alpha-1))``, i.e. the update of a tensor inside a block is ``m_L^(alpha-1)`` times the
  width rule's. An optimizer whose step for a gradient scaled by ``c`` has size ``U(c)`` then needs
  the learning-rate factor ``m_L^(alpha-1) * U(1) / U(r)``:

  ========================  =====================  ===========================================
  optimizer                 ``U(c)``               learning-rate factor inside blocks
  ========================  =====================  ===========================================
  SGD                       ``c``                  ``m_L^(2 alpha - 1)`` (1 at ``alpha = 1/2``:
                                                   TP VI's depth-muP has no depth factor for SGD)
  Adam(W), Lion, Muon       1 (scale-free)         ``m_L^(alpha - 1)`` (CompleteP's Table 1)
  ========================  =====================  ===========================================

  The same factor holds for the norm gains and biases inside blocks (their gradients carry ``r``
  too); embeddings, the final norm and the readout have none.
- Adam's epsilon is compared with ``sqrt(v)``, the gradient's size: inside blocks that is ``r``
  times smaller, so epsilon's factor gains ``m_L^-alpha`` (CompleteP: ``eps * m_N^-1 * m_L^-alpha`` on
  hidden weights).
- Weight decay keeps the width policy's factor (CompleteP: ``lambda * m_N`` on hidden weights, no
  depth factor; EleutherAI nanoGPT-mup ``completep`` branch, ``configure_optimizers``).

``depth_alpha="none"`` keeps every factor at 1 (branch multiplier 1, learning rates as in width
only): the baseline that fails across depth. The branch multiplier of each scaling repeat is the
derivation's constant ``"<repeat>.residual"`` (``"blocks.residual"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import sympy

from paramcalc.engine.optimizers.base import norm_for
from paramcalc.spec import Spec

__all__ = ["DEFAULT_ALPHA", "apply_depth", "at_depth", "parse_alpha", "predicted_exponents", "residual_key"]

#: CompleteP: the default wherever depth scales.
DEFAULT_ALPHA = sympy.Integer(1)


def residual_key(block: str) -> str:
    """The constant naming a scaling repeat's branch multiplier: ``blocks`` -> ``blocks.residual``."""
    return f"{block}.residual"


def parse_alpha(value: Any, spec: Spec) -> sympy.Rational | None:
    """``alpha`` as an exact rational in ``[1/2, 1]``, ``None`` for ``"none"`` (no depth scaling);
    the default (``None`` given) is :data:`DEFAULT_ALPHA` where depth scales."""
    if value is None:
        return DEFAULT_ALPHA if spec.depth_blocks else None
    if not spec.depth_blocks:
        raise ValueError(
            f"depth_alpha={value!r}, but no repeat of {spec.name!r} scales with depth: make its count a "
            "scaling width (`n_layers: {base: 4}` and `repeat: n_layers`)")
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    try:
        alpha = sympy.Rational(str(value).strip())
    except (TypeError, ValueError, SyntaxError):
        alpha = None
    if alpha is None or not sympy.Rational(1, 2) <= alpha <= 1:
        raise ValueError(f"depth_alpha must be a number from 1/2 to 1 (1: CompleteP, 1/2: depth-muP) or "
                         f"'none', got {value!r}")
    return alpha


def apply_depth(
    spec: Spec, params: Mapping[str, Any], laws: Mapping[str, Any], alpha: sympy.Rational | None,
) -> tuple[dict[str, Any], dict[str, sympy.Expr]]:
    """``params`` (name -> ParamScale) with the depth factors of the module docstring on every tensor
    inside a scaling repeat, and each repeat's branch multiplier (:func:`residual_key`)."""
    out = dict(params)
    constants: dict[str, sympy.Expr] = {}
    for block in spec.depth_blocks:
        width = spec.widths[block.width]
        m = width.symbol / sympy.Integer(width.value)
        constants[residual_key(block.name)] = sympy.Integer(1) if alpha is None else m ** -alpha
    if alpha is None:
        return out, constants
    cache: dict[tuple[Any, ...], tuple[sympy.Expr, sympy.Expr]] = {}
    for name, p in params.items():
        block = spec.depth_block(name)
        if block is None:
            continue
        width = spec.widths[block.width]
        m = width.symbol / sympy.Integer(width.value)
        law = laws[p.optimizer]
        t = p.tensor
        key = (law.name, t.d_in, t.fan_out, t.matrix_shape, m)
        if key not in cache:
            cache[key] = (_lr_factor(law, m, alpha, t), m ** -alpha if law.has_eps else sympy.Integer(1))
        lr, eps = cache[key]
        out[name] = replace(p, lr=p.lr * lr, eps=p.eps * eps)
    return out, constants


def _lr_factor(law: Any, m: sympy.Expr, alpha: sympy.Rational, t: Any) -> sympy.Expr:
    """``m^(alpha-1) * U(1) / U(m^-alpha)`` from the optimizer's own law, as a power of ``m``."""
    one = norm_for(law, sympy.Integer(1), sympy.Integer(1), t.d_in, t.fan_out, t.matrix_shape)
    scaled = norm_for(law, sympy.Integer(1), m ** -alpha, t.d_in, t.fan_out, t.matrix_shape)
    ratio = sympy.powsimp(sympy.simplify(one / scaled), force=True)
    factor = sympy.powsimp(m ** (alpha - 1) * ratio, force=True)
    if factor.free_symbols - m.free_symbols:
        raise ValueError(f"{law.name}: the depth factor {factor} depends on more than the depth")
    return factor


def _in_first_block(block: Any, name: str) -> str:
    """``blocks.7.attn.q.weight`` -> ``blocks.0.attn.q.weight``: every block has the same scales."""
    rest = name[len(block.name) + 1:].split(".", 1)
    return f"{block.name}.0" + (f".{rest[1]}" if len(rest) > 1 else "")


def at_depth(d: Any, depths: Mapping[str, int] | None) -> Any:
    """The derivation ``d`` for its spec expanded to the depths in ``depths`` (width name -> L; other
    names ignored): every block's tensors take the scales of the first block's, which are the same
    for every block (no factor depends on a block's index). Derives nothing; returns ``d`` itself
    where the depth is the one it has, and the same object for the same depths."""
    wanted = {b.width: int(depths[b.width]) for b in d.spec.depth_blocks if depths and b.width in depths}
    key = tuple(sorted(wanted.items()))
    memo = d.__dict__.setdefault("_at_depth", {})
    if key not in memo:
        memo[key] = _expand(d, wanted)
    return memo[key]


def _expand(d: Any, depths: Mapping[str, int]) -> Any:
    from paramcalc.engine.derivation import Derivation

    spec = d.spec.at_depth(depths)
    if spec is d.spec:
        return d

    def source(name: str) -> str:
        block = spec.depth_block(name)
        return name if block is None else _in_first_block(block, name)

    params = {t.name: replace(d[source(t.name)], name=t.name, tensor=t) for t in spec.tensors}
    layers = [layer.name for layer in spec.layers]
    constants = {k: v for k, v in d.constants.items() if spec.depth_block(k) is None}  # blocks.residual
    tied = {k: v for k, v in d.tied.items() if spec.depth_block(k) is None}
    for name in layers:
        if spec.depth_block(name) is not None:
            if f"{source(name)}.scale" in d.constants:
                constants[f"{name}.scale"] = d.constants[f"{source(name)}.scale"]
            if source(name) in d.tied:  # a tie inside a block: to the same block's tensor
                ts = d.tied[source(name)]
                first = f"{spec.depth_block(name).name}.0."
                here = name[:len(name) - len(source(name)) + len(first)]
                tensor = here + ts.tensor[len(first):] if ts.tensor.startswith(first) else ts.tensor
                tied[name] = replace(ts, layer=name, tensor=tensor)
    out = Derivation(spec, d.parametrization, d.optimizer, d.form, params, constants, tied,
                     policy=(d.weight_decay, d.decay))
    out.depth_alpha = d.depth_alpha
    return out


def predicted_exponents(alpha: sympy.Rational | None) -> dict[str, sympy.Rational]:
    """What the principle above predicts across depth ``L`` (widths fixed), as exponents of ``L``:

    - ``block_init``: a block's contribution to the stream at init, ``r * Theta(1)``: ``-alpha``;
    - ``block_change``: the change of a block's output, at its input at init, from its own update
      after a step: ``r * m_L^(alpha-1) = Theta(1/L)`` (the target; with no depth scaling, Theta(1));
    - ``update``: ``||dW||_*`` of a matrix inside a block: ``alpha - 1`` (1 without depth scaling: 0).

    The stream (at the readout) and its change are Theta(1) in ``L`` for every ``alpha`` in
    ``[1/2, 1]``: at init the ``L`` branches add variance ``L * r^2 = m_L^(1 - 2 alpha)``, bounded, and
    the ``L`` coherent block changes of ``1/L`` add to Theta(1)."""
    if alpha is None:
        zero = sympy.Integer(0)
        return {"block_init": zero, "block_change": zero, "update": zero}
    return {"block_init": -alpha, "block_change": sympy.Integer(-1), "update": alpha - 1}
