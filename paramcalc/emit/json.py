"""``--emit json``: one JSON object with sympy-parsable strings (CONTRACT.md).

``params`` holds exactly ``init_std``, ``lr`` and ``multiplier`` per tensor; everything else
(exponents, numbers, tensor facts, and ``factors``: each tensor's ``eps`` and ``weight_decay``
factors and the ``optimizer`` that trains it) sits in sibling keys so that scripts reading
``params`` can parse every value with sympy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from paramcalc.emit.printing import exponent_text, text
from paramcalc.engine import QUANTITIES, Derivation

__all__ = ["derivation_data", "dumps", "emit_json"]

_encode_str = json.encoder.encode_basestring_ascii


class _Entries:
    """Printed per-tensor entries, shared between tensors of one shape: derive evaluates a rule once
    per shape, so one dict per distinct entry, which :func:`dumps` then encodes once."""

    def __init__(self) -> None:
        self.scales: dict[tuple[Any, ...], tuple[dict[str, str], dict[str, str | None]]] = {}
        self.facts: dict[Any, dict[str, Any]] = {}

    def scale(self, p: Any) -> tuple[dict[str, str], dict[str, str | None]]:
        key = (p.init_std, p.lr, p.multiplier)
        found = self.scales.get(key)
        if found is None:
            found = self.scales[key] = (
                {q: text(getattr(p, q)) for q in QUANTITIES},
                {q: None if e is None else exponent_text(e) for q, e in p.exponents.items()},
            )
        return found

    def factors(self, p: Any) -> dict[str, str]:
        key = ("factors", p.eps, p.weight_decay, p.optimizer)
        if key not in self.facts:
            self.facts[key] = {"eps": text(p.eps), "weight_decay": text(p.weight_decay),
                               "optimizer": p.optimizer}
        return self.facts[key]

    def tensor(self, p: Any) -> dict[str, Any]:
        t = p.tensor
        key = (t.role, t.kind, t.layout, t.fan_in, t.fan_out, t.input, t.init, p.init_mean)
        if key not in self.facts:
            self.facts[key] = {
                "role": t.role,
                "kind": t.kind,
                "shape": [text(s) for s in t.shape],
                "fan_in": text(t.fan_in),
                "fan_out": text(t.fan_out),
                "input": t.input,
                "init": t.init,
                "init_mean": text(p.init_mean),
            }
        return self.facts[key]


def _tied(d: Derivation) -> dict[str, dict[str, str]]:
    return {
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
    }


def derivation_data(d: Derivation, widths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The derivation as plain data (strings and numbers)."""
    from paramcalc import __version__

    values_at = d.resolve_widths(widths)
    entries = _Entries()
    params: dict[str, dict[str, str]] = {}
    exponents: dict[str, dict[str, str | None]] = {}
    tensors: dict[str, dict[str, Any]] = {}
    factors: dict[str, dict[str, str]] = {}
    for name, p in d.items():
        params[name], exponents[name] = entries.scale(p)
        tensors[name] = entries.tensor(p)
        factors[name] = entries.factors(p)
    return {
        "paramcalc": __version__,
        "spec": d.spec.name,
        "parametrization": d.parametrization,
        "optimizer": d.optimizer.name,
        "form": d.form,
        "weight_decay": d.weight_decay,
        "decay": list(d.decay),
        "muon_adjust": getattr(d.optimizer, "adjust", None),
        "depth_alpha": None if d.depth_alpha is None else str(d.depth_alpha),
        "widths": {
            w.name: ({"base": w.value, "scaling": True} | ({"depth": True} if w.depth else {})) if w.scaling
            else {"value": w.value, "scaling": False}
            for w in d.spec.widths.values()
        },
        "params": params,
        "exponents": exponents,
        "tensors": tensors,
        "factors": factors,
        "constants": {name: text(expr) for name, expr in d.constants.items()},
        "tied": _tied(d),
        "values": {
            "widths": values_at,
            "params": d.evaluate(values_at),
            "constants": d.evaluate_constants(values_at),
            "tied": d.evaluate_tied(values_at),
            "tie_gaps": {layer: {"init_std": g.init_std, "rule_init_std": g.rule_init_std,
                                 "init_ratio": g.init_ratio, "lr": g.lr, "rule_lr": g.rule_lr,
                                 "lr_ratio": g.lr_ratio}
                         for layer, g in d.tie_gaps(values_at).items()},
        },
    }


def dumps(data: Any, depth: int = 2) -> str:
    """JSON with one key per line down to ``depth``, compact below: readable, and fast for specs
    with thousands of tensors (the C encoder writes each distinct leaf object once)."""
    leaves: dict[int, str] = {}  # id -> text; every object stays alive inside ``data`` meanwhile

    def encode(value: Any, level: int) -> str:
        if not isinstance(value, dict) or level >= depth or not value:
            found = leaves.get(id(value))
            if found is None:
                found = leaves[id(value)] = json.dumps(value)
            return found
        pad = "\n" + "  " * (level + 1)
        # _encode_str is what json.dumps writes for a str key, without its per-call set-up.
        items = [pad + _encode_str(str(k)) + ": " + encode(v, level + 1) for k, v in value.items()]
        return "{" + ",".join(items) + "\n" + "  " * level + "}"

    return encode(data, 0)


def emit_json(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    return dumps(derivation_data(d, widths)) + "\n"
