"""Optimizers, one module each (:mod:`.sgd`, :mod:`.adam`, :mod:`.adamw`, :mod:`.lion`,
:mod:`.muon`), looked up by name.

Each is an :class:`Optimizer` (see :mod:`paramcalc.engine.optimizers.base`): its update-size law in
spectral norm, its abc-symmetry power, and the torch and optax constructors the emitted code and the
verifier use. The names come from :data:`paramcalc.registry.OPTIMIZERS`.
"""

from __future__ import annotations

from paramcalc import registry
from paramcalc.engine.optimizers.base import Optimizer
from paramcalc.errors import lookup

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer", "register_optimizer", "unregister_optimizer"]

#: Name -> optimizer, in registry order.
OPTIMIZERS: dict[str, Optimizer] = registry.load(registry.OPTIMIZERS, "OPTIMIZER")


def get_optimizer(name: str, *, muon_adjust: str | None = None) -> Optimizer:
    """The registered optimizer ``name``; for Muon, with torch's ``adjust_lr_fn`` ``muon_adjust``."""
    opt = lookup(OPTIMIZERS, name, "optimizer")
    if hasattr(opt, "with_adjust"):
        return opt.with_adjust(muon_adjust)
    if muon_adjust is not None:
        raise ValueError(f"muon_adjust is an option of the muon optimizer; got optimizer {name!r}")
    return opt


def register_optimizer(optimizer: Optimizer) -> Optimizer:
    """Make ``optimizer`` available by its name to :func:`paramcalc.derive`, the tables and the emitters."""
    return registry.add(OPTIMIZERS, registry.OPTIMIZERS, optimizer)


def unregister_optimizer(name: str) -> None:
    """Remove an extension's optimizer (e.g. after a test)."""
    registry.remove(OPTIMIZERS, registry.OPTIMIZERS, name)
