"""The derivation engine: rules x optimizer laws -> per-tensor scales."""

from paramcalc.derive.derivation import QUANTITIES, Derivation, ParamScale, abc_shift, derive
from paramcalc.derive.optimizers import OPTIMIZERS, Optimizer, get_optimizer
from paramcalc.derive.rules import RULES, get_rule

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
]
