"""``--emit json``: one JSON object with sympy-parsable strings (CONTRACT.md).

``params`` holds exactly ``init_std``, ``lr`` and ``multiplier`` per tensor; everything else
(exponents, numbers, tensor facts) sits in sibling keys so that scripts reading ``params`` can
parse every value with sympy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from paramcalc.derive import QUANTITIES, Derivation
from paramcalc.emit.printing import exponent_text, text

__all__ = ["derivation_data", "dumps", "emit_json"]


def derivation_data(d: Derivation, widths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The derivation as plain data (strings and numbers)."""
    from paramcalc import __version__

    values_at = d.resolve_widths(widths)
    values = d.evaluate(values_at)
    tensor_cache: dict[Any, dict[str, Any]] = {}

    def tensor_facts(p: Any) -> dict[str, Any]:
        t = p.tensor
        key = (t.role, t.kind, t.shape, t.fan_in, t.fan_out, t.input, t.init, p.init_mean)
        if key not in tensor_cache:
            tensor_cache[key] = {
                "role": t.role,
                "kind": t.kind,
                "shape": [text(s) for s in t.shape],
                "fan_in": text(t.fan_in),
                "fan_out": text(t.fan_out),
                "input": t.input,
                "init": t.init,
                "init_mean": text(p.init_mean),
            }
        return tensor_cache[key]

    return {
        "paramcalc": __version__,
        "spec": d.spec.name,
        "parametrization": d.parametrization,
        "optimizer": d.optimizer.name,
        "form": d.form,
        "widths": {
            w.name: (
                {"base": w.value, "scaling": True}
                if w.scaling
                else {"value": w.value, "scaling": False}
            )
            for w in d.spec.widths.values()
        },
        "params": {name: {q: text(getattr(p, q)) for q in QUANTITIES} for name, p in d.items()},
        "exponents": {
            name: {q: None if e is None else exponent_text(e) for q, e in p.exponents.items()}
            for name, p in d.items()
        },
        "tensors": {name: tensor_facts(p) for name, p in d.items()},
        "constants": {name: text(expr) for name, expr in d.constants.items()},
        "tied": {
            layer: {
                "tensor": ts.tensor,
                "role": ts.role,
                "multiplier": text(ts.multiplier),
                "lr": text(ts.lr),
                "init_std": text(ts.init_std),
                "rule_init_std": text(ts.rule_init_std),
                "init_exponent_gap": str(ts.init_exponent_gap),
            }
            for layer, ts in d.tied.items()
        },
        "values": {
            "widths": values_at,
            "params": values,
            "constants": d.evaluate_constants(values_at),
            "tied": d.evaluate_tied(values_at),
        },
    }


def dumps(data: Any, depth: int = 2, _level: int = 0) -> str:
    """JSON with one key per line down to ``depth``, compact below: readable, and fast
    (the C encoder writes the leaves) for specs with thousands of tensors."""
    if not isinstance(data, dict) or _level >= depth or not data:
        return json.dumps(data)
    pad = "  " * (_level + 1)
    items = [f"{pad}{json.dumps(k)}: {dumps(v, depth, _level + 1)}" for k, v in data.items()]
    return "{\n" + ",\n".join(items) + "\n" + "  " * _level + "}"


def emit_json(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    return dumps(derivation_data(d, widths)) + "\n"
