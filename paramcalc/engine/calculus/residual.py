"""The first-step calculus through a residual chain, at one depth: what the depth verifier measures.

A chain whose ``residual: true`` repeat makes each block a branch, ``x = x + r * block(x)``
(:mod:`paramcalc.spec.topology`), expanded to ``L`` blocks (:func:`paramcalc.engine.depth.at_depth`).
The chain calculus (:mod:`paramcalc.engine.calculus`) runs inside each branch unchanged; the residual
step adds what the stream does, in numbers at the widths given (``L`` blocks of nested square roots
would make symbolic expressions grow with ``L``). At init, with ``s_k`` the stream's norm entering
block ``k`` and ``b_k`` the branch's output norm (a branch's Gaussian weights make its output
uncorrelated with its input)::

    s_{k+1}^2 = s_k^2 + r^2 b_k^2            (a pre-norm branch: b_k independent of s_k)

Backward, ``g_k`` the loss gradient at block ``k``'s output: the branch receives ``r g_k`` and
returns ``J_k^T r g_k`` through its own layers (its pre-norm scales it by ``sqrt(d) / s_k``), which
adds to the skip path in quadrature: ``g_{k-1}^2 = g_k^2 + ||J_k^T r g_k||^2``.

The first step, in the calculus' two parts (along the backward signal, and generic): a branch's own
updates change its output along its backward signal, ``r g_k``, i.e. along the stream's gradient,
so the ``L`` blocks' own changes add coherently (``along``); the stream's change entering a branch
is generic for the branch's weights (the component of ``g_k`` along ``J_k^T g_k`` averages to zero
over Gaussian weights), passes through the branch as a generic change, and adds in quadrature::

    (a, r_)  ->  (a + r a_k,  sqrt(r_^2 + r^2 g_k'^2)),   (a_k, g_k') = branch changes from (0, ||ds||)

What it returns, per depth (:func:`depth_quantities`), are the depth verifier's quantities
(:mod:`paramcalc.verify.depth`): the stream's RMS where the blocks end at init and its change after a
step, each measured block's contribution at init (``r b_k``), its own change (the branch with its
updated weights fed its input at init: the branch's changes from ``(0, 0)``, times ``r``) and its
largest update ``||dW||_*`` of a hidden matrix. Their slopes in ``L`` over the depths one trains are
the calculus' finite-depth prediction; the depth principle's exponents
(:func:`paramcalc.engine.depth.predicted_exponents`) are their limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sympy

from paramcalc.engine.calculus.chain import NotAChain, _Chain, _Op, _output_gradient
from paramcalc.engine.calculus.quantities import ETA, ONE, ZERO
from paramcalc.engine.depth import residual_key
from paramcalc.engine.derivation import Derivation
from paramcalc.errors import Problem

__all__ = ["depth_quantities", "residual_problems"]

#: Where in the stack a block is reported (as the depth verifier measures it).
POSITIONS = ("first", "middle", "last")


def residual_problems(derivation: Derivation) -> list[Problem]:
    """Why the residual calculus cannot run on ``derivation`` (empty if it can): a chain with
    residual blocks, no convolutions, no ties."""
    spec = derivation.spec
    if spec.topology.family != "chain" or not spec.topology.branches:
        return [Problem("layers", "the residual calculus needs a chain with residual: true blocks")]
    return [Problem(layer.path, f"{layer.name!r}: the calculus propagates vectors through untied weights")
            for layer in spec.layers if layer.definition.spatial or layer.attrs.get("tie")]


@dataclass
class _Block:
    name: str
    r: sympy.Expr
    ops: list[_Op]
    #: The stream's norm after the block, at init.
    stream_out: sympy.Expr
    out: sympy.Expr
    own: sympy.Expr = ZERO


class _Residual(_Chain):
    """The chain calculus with residual steps, in numbers at ``values``."""

    def __init__(self, derivation: Derivation, values: Mapping[sympy.Symbol, float]) -> None:
        super().__init__(derivation)
        self.derivation = derivation
        self.values = {k: sympy.Float(v) for k, v in values.items()}
        self.branch_steps = dict(self.spec.topology.branches)
        self.sequence: list[list[_Op] | _Block] = []

    def num(self, expr: sympy.Expr) -> sympy.Expr:
        return sympy.Float(sympy.sympify(expr).xreplace(self.values).evalf())

    def forward(self) -> sympy.Expr:
        a = self.num(self._input_norm())
        for step in self.spec.topology.steps:
            if step.op != "residual":
                if not self.sequence or isinstance(self.sequence[-1], _Block):
                    self.sequence.append([])
                a = self.num(self._forward_step(step, self.layers.get(step.layer), a, self.sequence[-1]))
                continue
            ops: list[_Op] = []
            b = a
            for inner in self.branch_steps[step.layer]:
                layer = self.layers[f"{step.layer}.{inner.layer}"] if inner.layer else None
                b = self.num(self._forward_step(inner, layer, b, ops))
            block = self.spec.depth_block(step.layer)
            r = ONE if block is None else self.num(self.derivation.constants[residual_key(block.name)])
            a = sympy.sqrt(a**2 + (r * b) ** 2)
            self.sequence.append(_Block(step.layer, r, ops, a, b))
        self.ops = [op for part in self.sequence if isinstance(part, list) for op in part]
        return a

    def backward(self, g: sympy.Expr) -> None:
        for part in reversed(self.sequence):
            if isinstance(part, list):
                for op in reversed(part):
                    g = self.num(self._back(op, g))
                continue
            branch = part.r * g
            for op in reversed(part.ops):
                branch = self.num(self._back(op, branch))
            g = sympy.sqrt(g**2 + branch**2)

    def changes(self) -> tuple[sympy.Expr, sympy.Expr]:
        """The first step's changes; returns the stream's change where the blocks end (two parts)."""
        along, generic, end = ZERO, ZERO, (ZERO, ZERO)
        for part in self.sequence:
            if isinstance(part, list):
                along, generic = (self.num(x) for x in self._changes(part, along, generic))
                continue
            own = [self.num(x) for x in self._changes(part.ops, ZERO, ZERO)]
            part.own = part.r * sympy.sqrt(own[0] ** 2 + own[1] ** 2)
            entering = sympy.sqrt(along**2 + generic**2)
            b_along, b_generic = (self.num(x) for x in self._changes(part.ops, ZERO, entering))
            along, generic = along + part.r * b_along, sympy.sqrt(generic**2 + (part.r * b_generic) ** 2)
            end = (along, generic)
        return end


def depth_quantities(
    derivation: Derivation, widths: Mapping[str, int], lr: float, loss: str = "mse", centered: bool = False,
) -> dict[tuple[str, str, int], float]:
    """The calculus' numbers for the depth verifier's quantities at ``widths`` (the depth included)
    and global learning rate ``lr``, on ``derivation`` expanded to that depth:
    ``(quantity, subject, step) -> value``, subjects
    ``"the stream"`` and ``"<repeat>[first|middle|last]"`` (module docstring)."""
    problems = residual_problems(derivation)
    if problems:
        raise NotAChain(problems, source=derivation.spec.source)
    spec = derivation.spec
    values = {w.symbol: float(widths.get(w.name, w.value)) for w in spec.widths.values()} | {ETA: lr}
    chain = _Residual(derivation, values)
    output = chain.forward()
    last = chain.features[list(chain.features)[-1]]
    chain.backward(chain.num(_output_gradient(loss, centered, output, last.width)))
    along, generic = chain.changes()
    blocks = [part for part in chain.sequence if isinstance(part, _Block)]
    first = blocks[0].ops[0].layer
    rms = sympy.sqrt(chain.num(first.definition.width_in(first)))
    out = {("stream", "the stream", 0): blocks[-1].stream_out / rms,
           ("dstream", "the stream", 1): sympy.sqrt(along**2 + generic**2) / rms}
    repeat = spec.depth_block(blocks[0].name)
    label = repeat.name if repeat is not None else blocks[0].name.rsplit(".", 1)[0]
    for pos, k in zip(POSITIONS, (0, len(blocks) // 2, len(blocks) - 1)):
        block = blocks[k]
        out[("block_init", f"{label}[{pos}]", 0)] = block.r * block.out / rms
        out[("block_change", f"{label}[{pos}]", 1)] = block.own / rms
        hidden = [t for t in spec.tensors if t.name.startswith(f"{block.name}.") and t.kind == "weight"
                  and t.role == "hidden"]
        if hidden:
            updates = [chain.num(chain.tensors[t.name].update) for t in hidden]
            out[("update", f"{label}[{pos}]", 1)] = max(updates)
    return {key: float(value) for key, value in out.items()}
