"""Neural tangent parametrization (Jacot et al. 2018), in the paper's folded form (Eq. 22).

NTP writes each layer as ``W / sqrt(d_in)`` with ``W ~ N(0, 1)`` and one global learning rate.
Folding the multiplier ``1/sqrt(d_in)`` into init and learning rate with the abc-symmetry gives
Eq. 22: ``init_std = gain / sqrt(d_in)`` and, for SGD, ``lr = 1 / d_in``.

Adam. Its updates ignore the gradient's scale, so folding the multiplier alone would give
``1/sqrt(d_in)``. We follow Everett et al. 2024 ("Scaling Exponents Across Parameterizations and
Optimizers", Table 1), whose NTK parametrization under Adam scales the raw learning rate of hidden
and readout weights as ``n^-1/2`` on top of the ``n^-1/2`` multiplier: an effective learning rate
``1 / d_in`` for every dense-input weight, the same factor as for SGD. Under it the hidden updates
have the spectral size, but the readout keeps its ``1/sqrt(n)`` init (Condition 1 asks ``1/n``), so
the output moves too much with width: NTP still fails Condition 1, now at the readout.

A readout *tied* to the embedding is different: the tie rule (:mod:`paramcalc.engine.ties`) gives
the readout use the multiplier that makes its learning rate NTP's ``1/d_in``; under Adam that
multiplier is ``1/n``, the readout's init becomes ``1/n`` with it, and NTP then has muP's exponents
on every tensor (``paramcalc verify examples/gpt.yaml --param ntp --optimizer adam`` passes). The
failure above needs an untied readout.
"""

from __future__ import annotations

import sympy

from paramcalc.engine.optimizers import Optimizer
from paramcalc.engine.rules.base import Scales, TensorShape

ONE = sympy.Integer(1)


class NTP:
    name = "ntp"
    title = "NTP"
    forms = ("default",)

    def scales(self, shape: TensorShape, optimizer: Optimizer, form: str) -> Scales:
        return Scales(shape.gain / sympy.sqrt(shape.d_in), 1 / shape.d_in, ONE)

    def attention_scale(self, d_head: sympy.Expr, d_head_base: sympy.Expr) -> sympy.Expr:
        """The usual ``1/sqrt(d_head)`` of independent queries and keys."""
        return 1 / sympy.sqrt(d_head)


RULE = NTP()
