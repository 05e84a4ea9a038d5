"""What an optimizer is to paramcalc: its update-size law, in spectral norm, and its constructors.

The laws are the only place where the optimizer enters the math (the rules ask
:meth:`Optimizer.lr_for_update`, the calculus :meth:`Optimizer.update_norm`). For a weight ``W``
mapping ``d_in -> fan_out`` trained with learning rate ``lr``, each optimizer module states its law
in its docstring.

abc-symmetry (TP5 Lemma J.1)
    Writing the effective weight as ``a * w`` with ``w ~ N(0, b^2)`` and learning rate ``c``, the
    change ``(a, b, c) -> (a*t, b/t, c/t**p)`` leaves training unchanged; ``p`` is the optimizer's
    :attr:`Optimizer.symmetry_power`.

Per-tensor factors. The derivation gives each tensor a factor on the global learning rate
(``ParamScale.lr``); an optimizer whose other hyperparameters scale with width (Adam's epsilon,
weight decay) adds its factors here, next to its law, so that a new optimizer is one module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

__all__ = ["Optimizer"]


class Optimizer:
    """Base class; one subclass per optimizer, one instance registered (``OPTIMIZER`` in its module)."""

    name: ClassVar[str]
    title: ClassVar[str]
    #: Format -> title where a format shows it differently (default :attr:`title`).
    titles: ClassVar[Mapping[str, str]] = {}
    #: ``p`` of the abc-symmetry: 2 for SGD, 1 for an optimizer that ignores the gradient's scale.
    symmetry_power: ClassVar[int]
    #: The ``torch.optim`` class (its name) and the optax constructor the emitted code uses.
    torch_class: ClassVar[str]
    optax_constructor: ClassVar[str]
    #: Tensors of optimizer state kept per parameter (Adam's two moments), for memory estimates.
    state_tensors: ClassVar[int] = 0
    #: A first learning rate to try where one is calibrated by probe steps.
    probe_lr: ClassVar[float] = 1e-2

    def update_norm(self, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any) -> Any:
        """``||dW||_*`` after one step, for a rank-one gradient of spectral norm ``grad_norm``."""
        raise NotImplementedError

    def lr_for_update(self, target: Any, d_in: Any, fan_out: Any) -> Any:
        """The learning rate giving ``||dW||_* = target`` when gradients obey Condition 1."""
        raise NotImplementedError

    def torch(self, groups: Iterable[Any], lr: float, **options: Any) -> Any:
        """The torch optimizer over ``groups`` (param groups with per-tensor learning rates)."""
        import torch

        return getattr(torch.optim, self.torch_class)(groups, lr=lr, **options)

    def title_in(self, fmt: str) -> str:
        return self.titles.get(fmt, self.title)

    def __repr__(self) -> str:
        return f"<optimizer {self.name!r}>"
