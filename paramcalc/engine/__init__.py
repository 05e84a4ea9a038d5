"""The derivation engine: rules x optimizer laws -> per-tensor scales."""

from paramcalc.engine.derivation import QUANTITIES, Derivation, ParamScale, abc_shift, derive
from paramcalc.engine.optimizers import OPTIMIZERS, Optimizer, get_optimizer, register_optimizer
from paramcalc.engine.rules import RULES, get_rule, register_rule

__all__ = [
    "OPTIMIZERS",
    "QUANTITIES",
    "RULES",
    "Derivation",
    "Optimizer",
    "ParamScale",
    "abc_shift",
    "derive",
    "get_optimizer",
    "get_rule",
    "register_optimizer",
    "register_rule",
]
