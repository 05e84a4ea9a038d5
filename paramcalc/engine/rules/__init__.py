"""Parametrization rules, one module each, looked up by name.

The names are :data:`paramcalc.registry.PARAMETRIZATIONS`.
"""

from __future__ import annotations

import importlib

from paramcalc import registry
from paramcalc.engine.rules.base import Rule, Scales, TensorShape, title_in
from paramcalc.errors import lookup

__all__ = [
    "RULES", "Rule", "Scales", "TensorShape", "get_rule", "register_rule", "title_in", "unregister_rule",
]

#: Name -> rule, in registry order.
RULES: dict[str, Rule] = {
    name: importlib.import_module(module).RULE for name, module in registry.PARAMETRIZATIONS.items()
}


def get_rule(name: str) -> Rule:
    return lookup(RULES, name, "parametrization")


def register_rule(rule: Rule) -> Rule:
    """Make ``rule`` available by its name to :func:`paramcalc.derive`, the tables and the emitters."""
    RULES[rule.name] = rule
    registry.PARAMETRIZATIONS[rule.name] = type(rule).__module__
    return rule


def unregister_rule(name: str) -> None:
    """Remove an extension's rule (e.g. after a test)."""
    RULES.pop(name, None)
    registry.PARAMETRIZATIONS.pop(name, None)
