"""The calculus' result, :class:`Scaling`: predictions keyed by ``(quantity, subject)``; and the
prediction that needs no forward plan, :func:`local_scaling`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sympy

from paramcalc.conditions import gaussian_spectral_norm
from paramcalc.engine.calculus.quantities import ETA, ONE, ZERO, FiniteWidthNote, Prediction
from paramcalc.engine.calculus.targets import target_exponents
from paramcalc.engine.derivation import Derivation
from paramcalc.spec import Spec
from paramcalc.symbolic import numeric, theta_exponent

__all__ = ["Scaling", "local_scaling"]


class Scaling:
    """The calculus applied to one derivation: predictions keyed by ``(quantity, subject)``.

    ``subject`` is a layer name for feature quantities (``rms_h``, ``rms_dh``, ``feature_change``),
    a tensor name (``fc1.weight``, ``fc1.bias``) for tensor quantities, and the last weight layer
    for ``alignment`` and ``output_gradient``. Use :meth:`exponent` for the asymptotic claim,
    :meth:`evaluate` for the finite-width one (``paramcalc.verify.fit.predicted_slope`` fits it across a
    sweep as measurements are).
    """

    def __init__(
        self,
        derivation: Derivation,
        loss: str,
        predictions: Mapping[tuple[str, str], Prediction],
        layers: Sequence[str],
        output_gradient: sympy.Expr,
        notes: Sequence[FiniteWidthNote],
        centered: bool = False,
    ) -> None:
        self.derivation = derivation
        self.loss = loss
        self.predictions: dict[tuple[str, str], Prediction] = dict(predictions)
        #: The weight layers of the chain, in order; the last one's features are the output.
        self.layers: tuple[str, ...] = tuple(layers)
        #: ``||dl/df||`` at the output at init, per example: the backward pass's starting point.
        self.output_gradient = output_gradient
        self.centered = centered
        self._notes = tuple(notes)

    def __repr__(self) -> str:
        d = self.derivation
        return (f"Scaling({d.spec.name!r}, {d.parametrization}, {d.optimizer.name}, loss={self.loss!r}, "
                f"{len(self.predictions)} predictions)")

    def __getitem__(self, key: tuple[str, str]) -> Prediction:
        return self.predictions[key]

    def __contains__(self, key: object) -> bool:
        return key in self.predictions

    @property
    def spec(self) -> Spec:
        return self.derivation.spec

    @property
    def output_layer(self) -> str:
        return self.layers[-1]

    def exponent(self, quantity: str, subject: str) -> sympy.Rational | None:
        """Theta-exponent in width of the prediction (every scaling width proportional to n)."""
        return self.predictions[(quantity, subject)].exponent

    def _env(self, widths: Mapping[str, int] | None, lr: float) -> dict[sympy.Symbol, float]:
        values = self.derivation.resolve_widths(widths)
        env = {w.symbol: float(values[w.name]) for w in self.spec.widths.values()}
        env[ETA] = float(lr)
        return env

    def evaluate(
        self, widths: Mapping[str, int] | None = None, lr: float = 1.0
    ) -> dict[tuple[str, str], float]:
        """Finite-width numbers of every prediction at ``widths`` (default: the base widths), for the
        global learning rate ``lr``."""
        env = self._env(widths, lr)
        memo: dict[sympy.Basic, float] = {}
        return {key: numeric(p.expr, env, memo) for key, p in self.predictions.items()}

    def notes(self, widths: Sequence[Mapping[str, int]]) -> list[FiniteWidthNote]:
        """Layers whose fixed fan-in still exceeds their fan-out at the smallest of ``widths``."""
        if not widths:
            return []
        at = self.derivation.resolve_widths(widths[0])
        env = {w.symbol: sympy.Integer(at[w.name]) for w in self.spec.widths.values()}
        out = []
        for note in self._notes:
            layer = self.spec.layer(note.layer)
            d_in = layer.attrs["fan_in"] if layer.definition.dense(layer) else ONE
            if sympy.sympify(layer.attrs["fan_out"]).xreplace(env) < sympy.sympify(d_in).xreplace(env):
                out.append(note)
        return out


def local_scaling(derivation: Derivation) -> Scaling:
    """The prediction that needs no graph, for any architecture: ``||W||_*`` at init, tensor by tensor.

    ``sigma (sqrt(fan_out) + sqrt(fan_in))`` (a vector's: its l2 norm; Rudelson & Vershynin 2010),
    and the same for each tied use (``"<layer>.weight"``, the matrix ``mu W`` the using layer
    computes with: its effective init std times the same sum). These numbers are exact at any
    width, so they carry the finite-width offsets of fixed dimensions: ``wte.weight`` of a GPT
    (``50257 x d``) has ``||W||_* ~ 0.02 (sqrt(50257) + sqrt(d))``, Theta-exponent 1/2 but a slope
    near 0.05 while ``d << 50257``, which the judge subtracts before comparing with Condition 1.

    Features and updates depend on the rest of the network, and there is no prediction for them
    here. Even Adam's update-size law, local in form, rests on the gradient's structure (Sec. 3.3):
    a gradient summed over ``r`` tokens has rank up to ``r``, and the sign of a rank-``r`` matrix
    has spectral norm ``~ sqrt(2/pi) sqrt(m n / r)`` above a random bulk ``~ sqrt(m) + sqrt(n)``; in a
    transformer whose heads scale with width, the query and key gradients of one head are dominated
    by a few tokens, so their effective rank grows with the number of heads until it reaches the
    number of tokens, and the constant drifts (:mod:`paramcalc.verify.config` keeps the tokens few for
    that reason). A key bias gets no gradient at all: softmax ignores ``q . b_k``, which adds the same
    number to every logit of a query. Used by the verifier for specs that are not chains.
    """
    spec = derivation.spec
    folded = derivation if all(p.multiplier == ONE for p in derivation.values()) else derivation.folded()
    targets = target_exponents(spec)
    scaling_symbols = spec.scaling_symbols
    predictions: dict[tuple[str, str], Prediction] = {}

    def add(quantity: str, subject: str, expr: sympy.Expr) -> None:
        predictions[(quantity, subject)] = Prediction(
            quantity, subject, expr, theta_exponent(expr, scaling_symbols), targets.get((quantity, subject)))

    for t in spec.tensors:
        p = folded[t.name]
        if t.layout == "vector":
            norm = (p.init_std + abs(p.init_mean)) * sympy.sqrt(t.fan_out)
        else:
            norm = gaussian_spectral_norm(p.init_std, t.fan_out, t.fan_in)
        if norm != ZERO:
            add("spectral_norm", t.name, norm)
    for layer, ts in folded.tied.items():
        use = ts.use
        norm = gaussian_spectral_norm(ts.init_std, use.fan_out, use.fan_in)
        if norm != ZERO:
            add("spectral_norm", f"{layer}.weight", norm)
    layers = [layer.name for layer in spec.weight_layers]
    return Scaling(derivation, "local", predictions, layers, ONE, ())
