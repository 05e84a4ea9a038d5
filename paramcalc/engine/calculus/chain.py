"""The first-step calculus through a chain (see :mod:`paramcalc.engine.calculus`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sympy

from paramcalc.conditions import gaussian_spectral_norm
from paramcalc.engine.calculus.quantities import (
    ACTIVATION_MOMENTS,
    ETA,
    ONE,
    ZERO,
    FiniteWidthNote,
    Prediction,
)
from paramcalc.engine.calculus.scaling import Scaling
from paramcalc.engine.calculus.targets import target_exponents
from paramcalc.engine.derivation import Derivation, ParamScale
from paramcalc.engine.factors import partner_lr_ratio
from paramcalc.engine.optimizers.base import norm_for
from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Layer, Spec
from paramcalc.spec.topology import Step
from paramcalc.symbolic import theta_exponent

__all__ = ["NotAChain", "chain_problems", "scaling"]


class NotAChain(SpecError):
    """The spec is not a chain the calculus can propagate through (the problems say why)."""


def chain_problems(spec: Spec) -> list[Problem]:
    """Why ``spec`` is not a chain the calculus propagates through (empty if it is).

    A chain of the spec's forward plan (:mod:`paramcalc.spec.topology`, the family
    :func:`paramcalc.models.build_model` builds), without tied weights: the calculus follows each
    tensor through the one layer that uses it.
    """
    problems = list(spec.topology.chain_problems)
    if problems:
        return problems
    spatial = [Problem(layer.path, f"{layer.kind} {layer.name!r} has features over positions; the "
                                   "calculus propagates vectors (a convolution is judged on the targets)")
               for layer in spec.layers if layer.definition.spatial]
    if spatial:
        return spatial
    if spec.topology.branches:
        return [Problem("layers", "residual blocks (residual: true): the width calculus does not propagate "
                                  "through residual branches (the depth verifier's calculus does, at each "
                                  "depth: paramcalc.engine.calculus.residual); their targets are judged")]
    return [Problem(f"{layer.path}.tie", f"{layer.name!r} uses a tied weight; the chain calculus needs "
                                         "each layer's own tensor")
            for layer in spec.layers if layer.attrs.get("tie")]


@dataclass
class _Tensor:
    """Norms of one parameter tensor: at init, its first update, and its Frobenius norm at init."""

    name: str
    norm: sympy.Expr
    frobenius: sympy.Expr
    update: sympy.Expr
    zero_init: bool


@dataclass
class _Features:
    """Norms at one weight layer's output: features, their change, the backward signal."""

    layer: str
    width: sympy.Expr
    h: sympy.Expr
    h_in: sympy.Expr
    dh: sympy.Expr = ZERO
    dh_in: sympy.Expr = ZERO
    grad: sympy.Expr = ZERO
    weight: str = ""


@dataclass
class _Op:
    """One step of the plan with the norm of its input at init and the backward signal at its output."""

    op: str  # weight | gain | act
    layer: Layer | None
    norm_in: sympy.Expr
    grad_out: sympy.Expr = ZERO


class _Chain:
    """The three passes of the calculus over a chain's plan: forward at init, backward at init, and
    the first step's updates and feature changes (see the package docstring)."""

    def __init__(self, derivation: Derivation) -> None:
        spec = derivation.spec
        self.spec = spec
        unfolded = all(p.multiplier == ONE for p in derivation.values())
        self.folded = derivation if unfolded else derivation.folded()
        # Under Muon, AdamW's tensors train at partner_lr_ratio times the global lr (as verify runs them).
        ratio = sympy.Float(partner_lr_ratio(derivation))
        self.eta = {name: ETA * (ONE if p.optimizer == derivation.optimizer.name else ratio)
                    for name, p in derivation.items()}
        self.c_f, self.c_b, self.c_4 = ACTIVATION_MOMENTS.get(spec.activation, (ONE, ONE, ONE))
        self.layers = {layer.name: layer for layer in spec.layers}
        self.ops: list[_Op] = []
        self.features: dict[str, _Features] = {}
        self.tensors: dict[str, _Tensor] = {}
        self.notes: list[FiniteWidthNote] = []

    def forward(self) -> sympy.Expr:
        """Norms at init, op by op; returns the output's norm."""
        a = self._input_norm()
        for step in self.spec.topology.steps:
            a = self._forward_step(step, self.layers.get(step.layer), a, self.ops)
        return a

    def _input_norm(self) -> sympy.Expr:
        """``||x||``: ``sqrt(n_0)`` for a dense input, 1 for a one-hot one."""
        first = self.layers[next(s.layer for s in self.spec.topology.steps if s.op == "weight")]
        return sympy.sqrt(first.attrs["fan_in"]) if first.definition.dense(first) else ONE

    def _forward_step(self, step: Step, layer: Layer | None, a: sympy.Expr, ops: list[_Op]) -> sympy.Expr:
        """One step of the plan at init (appended to ``ops``): the norm after it."""
        ops.append(_Op(step.op, layer, a))
        if step.op == "act":
            return self.c_f * a  # Assumption 2: ||phi(h)|| = Theta(||h||)
        if step.op == "gain":
            return layer.definition.calculus_forward(layer, self.folded, a)
        return self._weight_forward(layer, a)

    def _weight_forward(self, layer: Layer, a: sympy.Expr) -> sympy.Expr:
        w = self.folded[layer.params["weight"]]
        fan_out = layer.attrs["fan_out"]
        h = w.init_std * sympy.sqrt(fan_out) * a
        if "bias" in layer.params:
            h = h + self.folded[layer.params["bias"]].init_std * sympy.sqrt(fan_out)
        self.features[layer.name] = _Features(layer.name, fan_out, h, a, weight=w.name)
        return h

    def backward(self, g: sympy.Expr) -> None:
        """The gradient at each op's output, from the loss gradient ``g`` at the output."""
        for op in reversed(self.ops):
            g = self._back(op, g)

    def _back(self, op: _Op, g: sympy.Expr) -> sympy.Expr:
        """The gradient at ``op``'s input from ``g`` at its output (kept as the op's ``grad_out``)."""
        op.grad_out = g
        layer = op.layer
        if op.op == "weight":
            self.features[layer.name].grad = g
            if layer.definition.dense(layer):
                g = self.folded[layer.params["weight"]].init_std * sympy.sqrt(layer.attrs["fan_in"]) * g
            return g
        if op.op == "gain":
            return layer.definition.calculus_scale(layer, self.folded, op.norm_in) * g
        return self.c_b * g

    def changes(self) -> None:
        """Updates and feature changes, forward again, in two parts: along the backward signal and
        generic."""
        self._changes(self.ops, ZERO, ZERO)

    def _changes(
        self, ops: list[_Op], along: sympy.Expr, generic: sympy.Expr
    ) -> tuple[sympy.Expr, sympy.Expr]:
        """The change after ``ops`` (in its two parts) from the change before them."""
        after_act = False
        for op in ops:
            if op.op == "act":
                after_act = True
            elif op.op == "gain":
                along, generic = self._gain_change(op, along, generic)
            else:
                along, generic = self._weight_change(op, along, generic, after_act)
                after_act = False
        return along, generic

    def _gain_change(self, op: _Op, along: sympy.Expr, generic: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
        layer = op.layer
        kind = layer.definition
        dim = kind.width_in(layer)
        scale = kind.calculus_scale(layer, self.folded, op.norm_in)
        along, generic = scale * along, scale * generic
        input_rms = kind.calculus_input_rms(layer, self.folded, op.norm_in)
        for pname in layer.params.values():
            p = self.folded[pname]
            # A gain's gradient is g times the input it multiplies; a bias's, g.
            grad = op.grad_out * input_rms if p.tensor.kind == "gain" else op.grad_out
            update = norm_for(self.folded.law(pname), self.eta[pname] * p.lr, grad, ONE, dim, None)
            self.tensors[pname] = _vector(p, dim, update)
            along = along + update
        return along, generic

    def _weight_change(
        self, op: _Op, along: sympy.Expr, generic: sympy.Expr, after_act: bool
    ) -> tuple[sympy.Expr, sympy.Expr]:
        layer, a_in = op.layer, op.norm_in
        f = self.features[layer.name]
        w = self.folded[f.weight]
        fan_in, fan_out = layer.attrs["fan_in"], layer.attrs["fan_out"]
        dense = layer.definition.dense(layer)
        d_in = fan_in if dense else ONE
        norm = gaussian_spectral_norm(w.init_std, fan_out, fan_in)  # the stored matrix
        update = norm_for(self.folded.law(w.name), self.eta[w.name] * w.lr, f.grad * a_in, d_in, fan_out,
                          w.tensor.matrix_shape)
        self.tensors[w.name] = _Tensor(w.name, norm, w.init_std * sympy.sqrt(fan_out * fan_in), update,
                                       w.init_std == ZERO)
        gain_along, gain_in, gain_generic = (self.c_b, self.c_4, self.c_b) if after_act else (ONE, ONE, ONE)
        f.dh_in = sympy.sqrt((gain_in * along) ** 2 + (gain_generic * generic) ** 2)  # ||dh'_{l-1}||
        if dense:
            new_along = gain_along * w.init_std * sympy.sqrt(fan_in) * along
            new_generic = w.init_std * sympy.sqrt(fan_out) * sympy.sqrt(
                (gain_in * along) ** 2 + (gain_generic * generic) ** 2)
        else:
            new_along = new_generic = ZERO  # a one-hot input does not change
        new_along = new_along + update * a_in
        if "bias" in layer.params:
            b = self.folded[layer.params["bias"]]
            b_update = norm_for(self.folded.law(b.name), self.eta[b.name] * b.lr, f.grad, ONE, fan_out, None)
            self.tensors[b.name] = _vector(b, fan_out, b_update)
            new_along = new_along + b_update
        f.dh = sympy.sqrt(new_along**2 + new_generic**2)
        note = _finite_width_note(layer, w, d_in, fan_out, self.spec.scaling_symbols)
        if note is not None:
            self.notes.append(note)
        return new_along, new_generic


def _output_gradient(loss: str, centered: bool, output: sympy.Expr, n_out: sympy.Expr) -> sympy.Expr:
    """``||dl/df||`` at init, per example."""
    if loss == "mse" and centered:
        return 2 * sympy.sqrt(n_out) / n_out  # (f - f_0) - y = -y at init
    if loss == "mse":
        # f - y with targets y of RMS 1, independent of the output at init; mean over outputs.
        return 2 * sympy.sqrt(output**2 + n_out) / n_out
    return ONE  # softmax - onehot: Theta(1) whatever the logits


def scaling(derivation: Derivation, loss: str = "mse", centered: bool = False) -> Scaling:
    """Run the first-step calculus on ``derivation`` (see the package docstring).

    ``loss`` is ``mse`` (mean squared error over outputs, targets of RMS 1) or ``ce`` (softmax
    cross-entropy); ``centered`` says the loss sees ``f - f_0`` (the output minus its value at init),
    so that its gradient at init does not depend on the output's size. Raises :class:`NotAChain`
    when the spec is not a chain.
    """
    if loss not in ("mse", "ce"):
        raise ValueError(f"unknown loss {loss!r}; expected mse or ce")
    spec = derivation.spec
    problems = chain_problems(spec)
    if problems:
        raise NotAChain(problems, source=spec.source)
    chain = _Chain(derivation)
    output = chain.forward()
    names = list(chain.features)
    gradient = _output_gradient(loss, centered, output, chain.features[names[-1]].width)
    chain.backward(gradient)
    chain.changes()
    predictions = _predictions(list(chain.features.values()), chain.tensors, spec.scaling_symbols,
                               target_exponents(spec))
    return Scaling(derivation, loss, predictions, names, gradient, chain.notes, centered)


def _vector(p: ParamScale, fan_out: sympy.Expr, update: sympy.Expr) -> _Tensor:
    """A bias or gain: an ``n x 1`` matrix; its spectral norm is its l2 norm."""
    norm = (p.init_std + abs(p.init_mean)) * sympy.sqrt(fan_out)
    return _Tensor(p.name, norm, norm, update, p.init_std == ZERO and p.init_mean == ZERO)


def _finite_width_note(
    layer: object, w: ParamScale, d_in: sympy.Expr, fan_out: sympy.Expr, scaling: frozenset[sympy.Symbol]
) -> FiniteWidthNote | None:
    """A layer whose fan-out grows but may start below its fixed fan-in (the paper's first layer)."""
    if (theta_exponent(fan_out, scaling) or 0) <= (theta_exponent(d_in, scaling) or 0):
        return None
    name = layer.name  # type: ignore[attr-defined]
    text = (f"{name}: fan_out {fan_out} < fan_in {d_in} at these widths, so ||W||_* ~ sigma "
            f"(sqrt({fan_out}) + sqrt({d_in})) is dominated by the fixed fan-in and Claim 1 "
            "(fan_out >= fan_in) does not hold yet")
    if w.init_std.has(sympy.Min):
        text += (f". The spectral init's min(1, sqrt(fan_out/fan_in)) shrinks {name} so that its spectral "
                 f"norm, not only its entries, meets Condition 1: {name}'s features and every feature "
                 f"after it are sqrt({fan_out}/{d_in}) smaller until {fan_out} = {d_in}, by design, and "
                 "SGD updates of the next layer with them. Desideratum 1 holds from there on; here it "
                 "is judged on slopes corrected by the calculus' finite-width offset")
    return FiniteWidthNote(name, text)


def _predictions(
    features: list[_Features],
    tensors: dict[str, _Tensor],
    scaling: frozenset[sympy.Symbol],
    targets: Mapping[tuple[str, str], sympy.Rational],
) -> dict[tuple[str, str], Prediction]:
    out: dict[tuple[str, str], Prediction] = {}

    def add(quantity: str, subject: str, expr: sympy.Expr, hidden: bool = True) -> None:
        out[(quantity, subject)] = Prediction(quantity, subject, expr, theta_exponent(expr, scaling),
                                              targets.get((quantity, subject)), hidden)

    last = features[-1]
    for f in features:
        hidden = f is not last
        rms = sympy.sqrt(f.width)
        # Desideratum 1 for hidden features; for the output, its change only (Sec. 4: a Theta(1)
        # change of the loss per step needs ||dh_L|| = Theta(sqrt(n_L))).
        add("rms_h", f.layer, f.h / rms, hidden)
        add("rms_dh", f.layer, f.dh / rms, hidden)
        if f.h != ZERO and hidden:  # Eq. 23 is about hidden features (for a scalar output it is a
            add("feature_change", f.layer, f.dh / f.h, hidden)  # ratio of scalars, heavy-tailed)
    for t in tensors.values():
        if not t.zero_init:
            add("spectral_norm", t.name, t.norm)
            add("relative_update", t.name, t.update / t.norm)
            add("relative_frobenius", t.name, t.update / t.frobenius)
        add("update_norm", t.name, t.update)
        add("stable_rank", t.name, ONE)  # Lemma 1: ||dW||_F / ||dW||_* = Theta(1)
    w = tensors[last.weight]
    # Eq. 24 after a step: ||(W + dW)(h' + dh')|| / (||W + dW||_* ||h' + dh'||), without cancellation.
    add("alignment", last.layer, (last.h + last.dh) / ((w.norm + w.update) * (last.h_in + last.dh_in)), False)
    return out
