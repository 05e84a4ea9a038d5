"""``--emit jax``: a Python module (importing only ``math``, ``jax`` and ``optax``) that applies a
derivation to parameters in flax's layout.

It defines ``init_params(key, widths=None)``, ``make_optimizer(lr, widths=None)`` (per-tensor
learning rates through optax's label-based ``partition``), ``MULTIPLIERS`` and the attention-logit
scales (CONTRACT.md, "Emitted JAX code"). Every number is computed at run time from the derived
expression, printed here; the template only lays the strings out.

>>> import paramcalc
>>> from paramcalc.emit import emit
>>> code = emit(paramcalc.derive("examples/mlp.yaml", "mup", "adam"), "jax")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy

from paramcalc.emit.python import (
    WidthCode,
    constant_entries,
    expression_comment,
    header,
    literal,
    number,
    tensor_entry,
    width_defaults,
)
from paramcalc.emit.templating import render
from paramcalc.engine import Derivation
from paramcalc.engine.factors import lr_in_layout
from paramcalc.errors import SpecError
from paramcalc.spec import Tensor

__all__ = ["emit_jax", "jax_context", "leaves"]

def leaves(d: Derivation) -> dict[str, tuple[str, str]]:
    """Spec tensor -> (layer, flax leaf name), for every tensor of the derivation."""
    out: dict[str, tuple[str, str]] = {}
    for layer in d.spec.layers:
        for param, tensor in layer.params.items():
            if layer.name in d.tied and param == "weight":
                continue  # the owner's tensor, listed under the owner
            try:
                out[tensor] = layer.definition.flax_leaf(layer, param)
            except KeyError:
                names = layer.definition.flax_leaves
                raise SpecError(
                    f"layers: {layer.name}: --emit jax has no flax layout for parameter {param!r} "
                    f"of a {layer.kind!r} layer (its kind names: {', '.join(names) or 'none'})",
                    source=d.spec.source,
                ) from None
    missing = [name for name in d if name not in out]
    if missing:  # an engine invariant: every tensor belongs to a layer
        raise RuntimeError(f"tensors without a layer: {missing}")
    return out


def _flax_shape(d: Derivation, t: Tensor) -> tuple[sympy.Expr, ...]:
    """The tensor's shape in flax, as its layer's kind stores it (:meth:`LayerKind.flax_shape`)."""
    return d.spec.layer(t.layer).definition.flax_shape(t)


def jax_context(d: Derivation, widths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The template's strings: literals, numbers and Python expressions over the widths ``w``.

    ``widths`` (default: the spec's values) become the defaults of the emitted functions.
    """
    optax_name = d.optimizer.optax_constructor
    code = WidthCode.for_derivation(d)
    at = d.resolve_widths(widths)
    values = d.evaluate(at)
    where = leaves(d)
    tensors = []
    by_layer: dict[str, list[dict[str, str]]] = {}
    for name, p in d.items():
        layer, leaf = where[name]
        # optax reads a flax kernel by its axes: fan_out, fan_in in torch's terms, whatever the layout
        lr = lr_in_layout(d, name, p.tensor.fan_out, p.tensor.fan_in)
        entry = tensor_entry(d, name, _flax_shape(d, p.tensor), values[name], at, code, lr)
        tensors.append({**entry, "layer": literal(layer), "leaf": literal(leaf)})
        by_layer.setdefault(layer, []).append(
            {"name": literal(leaf), "value": number(values[name]["multiplier"])}
        )
    tied_values = d.evaluate_tied(at)
    return {
        "h": header(d, "jax"),
        "optax_name": optax_name,
        "optax_sentence": _optax_sentence(d),
        "widths": width_defaults(d, at),
        "tensors": tensors,
        "multipliers": [{"layer": literal(layer), "leaves": ls} for layer, ls in by_layer.items()],
        "tied": [
            {
                "layer": literal(layer),
                "owner": literal(where[ts.tensor][0]),
                "leaf": literal(where[ts.tensor][1]),
                "value": number(tied_values[layer]["multiplier"]),
                "comment": expression_comment(multiplier=ts.multiplier),
                "code": code(ts.multiplier),
            }
            for layer, ts in d.tied.items()
        ],
        "constants": constant_entries(d, at, code),
        "residuals": constant_entries(d, at, code, ".residual"),
    }


def _optax_sentence(d: Derivation) -> str:
    laws = list(d.laws.values())
    if len(laws) == 1:
        return f"``{laws[0].optax_constructor}``"
    return (f"``{laws[0].optax_constructor}`` for the tensors {laws[0].title} trains (the hidden matrices) "
            f"and ``{laws[1].optax_constructor}`` for the others")


def emit_jax(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    """The JAX module for ``d``. Its functions take widths at run time; ``widths`` (default: the
    spec's values, bases for scaling widths) are their defaults."""
    return render("jax/params.py.j2", **jax_context(d, widths))
