"""Parametrization rules, one module each, looked up by name."""

from __future__ import annotations

from paramcalc.engine.rules import mup, ntp, sp, spectral
from paramcalc.engine.rules.base import Rule, Scales, TensorShape
from paramcalc.errors import lookup

__all__ = ["RULES", "Rule", "Scales", "TensorShape", "get_rule"]

RULES: dict[str, Rule] = {m.RULE.name: m.RULE for m in (spectral, mup, ntp, sp)}


def get_rule(name: str) -> Rule:
    return lookup(RULES, name, "parametrization")
