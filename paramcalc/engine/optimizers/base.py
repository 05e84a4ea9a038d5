"""What an optimizer is to paramcalc: its update-size law, in spectral norm, and its constructors.

The laws are the only place where the optimizer enters the math (the rules ask
:meth:`Optimizer.lr_for_update`, the calculus :meth:`Optimizer.update_norm`). For a weight ``W``
mapping ``d_in -> fan_out`` trained with learning rate ``lr``, each optimizer module states its law
in its docstring. ``stored`` is the tensor's shape as torch stores it, ``(rows, cols)``: a law that
depends on the stored layout (Muon's shape factor reads ``param.shape[:2]``) uses it; for a layer in
the usual ``(fan_out, fan_in)`` layout it is ``(fan_out, fan_in)``.

abc-symmetry (TP5 Lemma J.1)
    Writing the effective weight as ``a * w`` with ``w ~ N(0, b^2)`` and learning rate ``c``, the
    change ``(a, b, c) -> (a*t, b/t, c/t**p)`` leaves training unchanged; ``p`` is the optimizer's
    :attr:`Optimizer.symmetry_power`.

Which optimizer trains a tensor. :meth:`Optimizer.assign` names it: the optimizer itself, except
for Muon, which trains the hidden matrices and hands every other tensor to AdamW
(:mod:`paramcalc.engine.optimizers.muon`). The per-tensor factors on epsilon and weight decay are
derived in :mod:`paramcalc.engine.factors` from the facts declared here (:attr:`has_eps`,
:attr:`decoupled_decay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

__all__ = ["Optimizer", "lr_for", "norm_for", "stored_shape"]


def stored_shape(stored: tuple[Any, ...] | None, d_in: Any, fan_out: Any) -> tuple[Any, Any]:
    """``(rows, cols)`` of the stored matrix: ``stored[:2]`` when known, else ``(fan_out, d_in)``."""
    if stored is not None and len(stored) >= 2:
        return stored[0], stored[1]
    return fan_out, d_in


def lr_for(opt: Any, target: Any, d_in: Any, fan_out: Any, stored: tuple[Any, ...] | None) -> Any:
    """``opt.lr_for_update``, passing ``stored`` only to a law that reads the layout (an extension's
    law written for ``(target, d_in, fan_out)`` keeps working)."""
    extra = (stored,) if getattr(opt, "reads_layout", False) else ()
    return opt.lr_for_update(target, d_in, fan_out, *extra)


def norm_for(
    opt: Any, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any, stored: tuple[Any, ...] | None
) -> Any:
    """``opt.update_norm``, passing ``stored`` only to a law that reads the layout."""
    extra = (stored,) if getattr(opt, "reads_layout", False) else ()
    return opt.update_norm(lr, grad_norm, d_in, fan_out, *extra)


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
    #: The update divides by ``sqrt(v) + eps`` (Adam, AdamW): epsilon gets a per-tensor factor.
    has_eps: ClassVar[bool] = False
    #: Weight decay is decoupled (each step multiplies ``W`` by ``1 - lr * weight_decay``: AdamW,
    #: Lion, Muon) rather than an L2 term added to the gradient (torch's SGD and Adam).
    decoupled_decay: ClassVar[bool] = False
    #: The law reads the stored layout: the rules pass ``stored`` (:func:`lr_for`, :func:`norm_for`).
    reads_layout: ClassVar[bool] = False

    def update_norm(
        self, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any, stored: tuple[Any, ...] | None = None
    ) -> Any:
        """``||dW||_*`` after one step, for a rank-one gradient of spectral norm ``grad_norm``."""
        raise NotImplementedError

    def lr_for_update(
        self, target: Any, d_in: Any, fan_out: Any, stored: tuple[Any, ...] | None = None
    ) -> Any:
        """The learning rate giving ``||dW||_* = target`` when gradients obey Condition 1."""
        raise NotImplementedError

    def assign(self, tensor: Any) -> Optimizer:
        """The optimizer that trains ``tensor`` (a :class:`paramcalc.spec.Tensor`): this one."""
        return self

    @property
    def trained_with(self) -> tuple[Optimizer, ...]:
        """Every optimizer :meth:`assign` may name, this one first."""
        return (self,)

    def torch_options(self) -> dict[str, Any]:
        """Keyword arguments the torch class needs beyond ``lr`` (Muon's ``adjust_lr_fn``)."""
        return {}

    def torch(self, groups: Iterable[Any], lr: float, **options: Any) -> Any:
        """The torch optimizer over ``groups`` (param groups with per-tensor learning rates)."""
        import torch

        return getattr(torch.optim, self.torch_class)(groups, lr=lr, **self.torch_options(), **options)

    def title_in(self, fmt: str) -> str:
        return self.titles.get(fmt, self.title)

    def __repr__(self) -> str:
        return f"<optimizer {self.name!r}>"
