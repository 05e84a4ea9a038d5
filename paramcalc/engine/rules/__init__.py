"""Parametrization rules, one module each, looked up by name.

The names are :data:`paramcalc.registry.PARAMETRIZATIONS`.
"""

from __future__ import annotations

from paramcalc import registry
from paramcalc.engine.rules.base import Rule, Scales, TensorShape, title_in
from paramcalc.errors import lookup

__all__ = [
    "RULES", "Rule", "Scales", "TensorShape", "get_rule", "register_rule", "title_in", "unregister_rule",
]

#: Name -> rule, in registry order.
RULES: dict[str, Rule] = registry.load(registry.PARAMETRIZATIONS, "RULE")


def get_rule(name: str) -> Rule:
    return lookup(RULES, name, "parametrization")


def register_rule(rule: Rule) -> Rule:
    """Make ``rule`` available by its name to :func:`paramcalc.derive`, the tables and the emitters."""
    return registry.add(RULES, registry.PARAMETRIZATIONS, rule)


def unregister_rule(name: str) -> None:
    """Remove an extension's rule (e.g. after a test)."""
    registry.remove(RULES, registry.PARAMETRIZATIONS, name)
