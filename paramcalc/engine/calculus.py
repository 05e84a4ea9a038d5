"""First-step scaling calculus: how big features, weights and updates are, for any parametrization.

Given a :class:`~paramcalc.engine.Derivation` of a *chain* (``x -> W_1 -> act -> W_2 -> ... -> W_L``,
norms allowed in between), this module propagates l2 norms through one gradient step, the setting
of the paper's Section 3.1, and returns per layer and per tensor sympy expressions in the width
symbols: their Theta-exponents (the asymptotic claim) and their numbers at the widths one trains
(the finite-width claim). The verifier (:mod:`paramcalc.verify`) measures the same quantities; it
never derives a scaling itself.

The derivation is first folded (abc-symmetry, TP5 Lemma J.1) so that every tensor computes with its
stored value: effective init std ``sigma_l`` and learning rate ``eta * eta_l`` (``eta`` the global
learning rate, kept as the symbol :data:`ETA`). For a weight ``W_l`` of shape ``n_l x n_{l-1}``
(``d_in`` its input dimension in natural norms: ``n_{l-1}`` for dense inputs, 1 for one-hot inputs,
biases and gains, App. E), and ``h'_l = phi(h_l)``:

Forward, at initialisation (Claim 1; Assumption 2: the activation keeps the norm up to
``c_f = sqrt(E phi(z)^2)``, ``z ~ N(0, 1)``)::

    ||x||            = sqrt(n_0)  (dense input)      or 1 (one-hot input)
    ||h_l||          = sigma_l sqrt(n_l) ||h'_{l-1}||   (+ sigma_b sqrt(n_l) for a normal-init bias)
    ||W_l||_*        = sigma_l (sqrt(n_l) + sqrt(n_{l-1}))   (Rudelson & Vershynin 2010; Sec. 4)

Backward, at initialisation (``g_l`` the loss gradient at layer l's output, per example;
``c_b = sqrt(E phi'(z)^2)``)::

    ||g_L||          = 2 sqrt(||f||^2 + n_L) / n_L   (MSE, mean over outputs, targets of RMS 1
                       independent of the output f at init; 2 sqrt(n_L) / n_L when the loss sees
                       the centered output f - f_0)      or 1 (cross-entropy)
    ||g_{l-1}||      = c_b sigma_l sqrt(n_{l-1}) ||g_l||     (W^T g for g independent of W)

Update sizes come from the optimizer's update-size law (:meth:`Optimizer.update_norm`, the only
place the optimizer enters): SGD's gradient ``g_l h'_{l-1}^T`` is rank one and aligned (Eq. 6, Claim
2), ``||dW_l||_* = eta_l ||g_l|| ||h'_{l-1}||``; Adam's sign-like update has
``||dW_l||_* = eta_l sqrt(n_l d_in)`` (Sec. 3.3). Biases and gains are ``n x 1`` matrices whose input is
the constant 1 (App. D) or the normalised feature of RMS 1.

Feature changes, Eq. 9: ``dh_l = dW_l h'_{l-1} + W_l dh'_{l-1}`` (+ ``db_l``; the second-order
``dW dh`` is dropped). Eq. 5 bounds the second term by ``||W_l||_* ||dh'_{l-1}||``; the size it actually
has follows from where ``dh`` points. A first-step change is driven by the backward signal: every
term that a layer's own update adds, ``dW_l h' = -eta_l g_l ||h'||^2`` and ``db_l``, lies along
``g_l`` (Claim 2). So the calculus tracks each change in two parts, ``a`` along the backward signal
and ``r`` generic (independent of the next weight), ``||dh|| = sqrt(a^2 + r^2)``. For a Gaussian
``W`` (``m x p``, entries of std ``sigma``) and ``D`` the activation's derivative, squared::

    E ||W D W^T g||^2 = sigma^4 ||g||^2 (m p E[d^2] + p^2 E[d]^2),

of which ``sigma^2 p E[phi'^2] ||g||`` lies along ``g``. Hence, through ``W_l``::

    a_l = c_b sigma_l sqrt(n_{l-1}) a_{l-1} + ||dW_l||_* ||h'_{l-1}|| + ||db_l||     (along g_l)
    r_l = sigma_l sqrt(n_l) sqrt(c_4^2 a_{l-1}^2 + c_b^2 r_{l-1}^2)                  (generic: Claim 1)

with ``c_4 = sqrt(E phi'^4 / E phi'^2)`` (1 for ReLU). Both gains are at most ``||W_l||_*``, so the
Theta-exponents are those of Eq. 5's bound (the paper's argument that it is tight); the split fixes
the constants, which decide where terms of different exponents cross at finite width (e.g. under SP
the first layer's change, through ``n_0 = 3072``, against the hidden layer's own ``n``). A norm layer
maps its input to RMS 1 (times its gain): it rescales both parts, and the backward signal, by
``sqrt(dim) / ||h||``.

Sums are kept as sums: their Theta-exponent is the largest term's (:func:`theta_exponent`), and their
numbers show where a fixed dimension still dominates at the widths one trains. For the paper's MLP
(``n_0 = 3072``, hidden ``n``, output 1) the exponent of RMS(dh) at the hidden layers is 0 under
spectral and muP (Desideratum 1), -1/2 under NTP with SGD (Sec. 5.3, Lee et al. 2019) and +1/2 at the
second layer under SP with SGD (it blows up, Sec. 5.2); under NTP with Adam the hidden features move
at the right size but the readout, initialised ``sqrt(n)`` above Condition 1, makes the output
change grow like ``n^(1/2)``.

The calculus is per example (Sec. 3.1). A batch of ``B`` examples (Assumptions 3-4) changes
constants, and later steps (Assumption 1) too, not exponents, so the first-step calculus is what a
few measured steps are compared against, with one caveat the verifier designs around: the loss
gradient at the output mixes the network's own output at init, ``f_0``, with the targets. Where
``f_0`` is comparable to the targets inside the measured range (muP below its base width, whose
readout std is ``16/d`` for base 256), the two parts of a batch's mean gradient add differently (the
targets' independent signs like ``sqrt(B)``, the output's coherently through the mean of ReLU
features), and ``||dW||_*`` of the paper's MLP drifted from the per-example prediction by 0.25 in
slope at batch 32 and 0.35 at batch 200 (within 0.02 at batch 1). Training the centered output
``f - f_0`` (Chizat et al. 2019) makes the gradient at init ``-2y/n_L`` at every width and removes the
drift: on the paper's MLP and ``examples/mlp.yaml`` at widths 64..1024, batch 32, measured slopes
then agree with these predictions within 0.1 (0.12 for a single output's change, whose seed spread
is +-0.2). At batches large against the width the batch adds width effects of its own: the bulk of
``sum_i g_i h_i^T`` grows like ``sqrt(B/n)`` (0.15 on the first layer's ``||dW||_*`` at batch 200),
and Adam's ``sign`` of an incoherent batch gradient (many classes, orthogonal inputs) is a random
sign matrix of norm ``eta (sqrt(m) + sqrt(n))`` until its ``eta sqrt(m n)`` spike takes over at
``n >> B``.

>>> import paramcalc
>>> from paramcalc.engine.calculus import scaling
>>> spec = {"name": "m", "widths": {"n0": 3072, "d": {"base": 256}, "n_out": 1}, "layers": [
...     {"name": "fc1", "fan_in": "n0", "fan_out": "d"}, {"name": "fc2", "fan_in": "d", "fan_out": "d"},
...     {"name": "head", "fan_in": "d", "fan_out": "n_out"}]}
>>> s = scaling(paramcalc.derive(spec, "ntp", "sgd"))
>>> s.exponent("rms_dh", "fc2")
-1/2
>>> scaling(paramcalc.derive(spec, "mup", "sgd")).exponent("rms_dh", "fc2")
0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import sympy

from paramcalc.engine.derivation import Derivation, ParamScale
from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Spec
from paramcalc.symbolic import numeric, theta_exponent

__all__ = [
    "ACTIVATION_MOMENTS",
    "ETA",
    "QUANTITIES",
    "FiniteWidthNote",
    "NotAChain",
    "Prediction",
    "Quantity",
    "Scaling",
    "chain_problems",
    "local_scaling",
    "loglog_slope",
    "scaling",
    "sweep",
    "target_exponents",
]

#: The global learning rate (every ``lr`` factor multiplies it). Not a valid width name, so it can
#: never collide with a spec's symbols; its Theta-exponent is 0.
ETA = sympy.Symbol("η", positive=True)
ZERO = sympy.Integer(0)
ONE = sympy.Integer(1)

#: ``(c_f, c_b, c_4)`` for ``z ~ N(0, 1)``: ``c_f = sqrt(E phi(z)^2)`` shrinks a feature of RMS 1,
#: ``c_b = sqrt(E phi'(z)^2)`` a backward signal or a generic change, ``c_4 = sqrt(E phi'^4 / E phi'^2)``
#: a change along the backward signal (numerical quadrature; exact for ReLU and the identity).
#: Width-independent constants: they move no exponent, only where finite-width crossovers fall.
ACTIVATION_MOMENTS: dict[str, tuple[sympy.Expr, sympy.Expr, sympy.Expr]] = {
    "relu": (sympy.sqrt(2) / 2, sympy.sqrt(2) / 2, ONE),
    "gelu": (sympy.Float("0.65209"), sympy.Float("0.67517"), sympy.Float("0.97569")),
    "tanh": (sympy.Float("0.62793"), sympy.Float("0.68147"), sympy.Float("0.85754")),
    "silu": (sympy.Float("0.59647"), sympy.Float("0.61602"), sympy.Float("0.86902")),
    "identity": (ONE, ONE, ONE),
}


@dataclass(frozen=True)
class Quantity:
    """A measurable quantity: what it is, what it is measured on, and the paper's target for it.

    ``subject`` is ``layer`` (features at a weight layer's output), ``tensor`` (a parameter tensor) or
    ``final`` (the last weight layer only). ``target`` names the condition that fixes its exponent:
    ``desideratum`` (Desideratum 1: RMS Theta(1)), ``condition`` (Condition 1:
    ``sqrt(fan_out / d_in)``), ``logits`` (attention logits Theta(1), TP5 Definition 4.1), or ``None``
    (reported, not judged).
    """

    key: str
    title: str
    subject: Literal["layer", "tensor", "final"]
    step: Literal["init", "update"]
    target: Literal["desideratum", "condition", "logits"] | None
    reference: str


QUANTITIES: dict[str, Quantity] = {
    q.key: q
    for q in (
        Quantity("rms_h", "RMS(h)", "layer", "init", "desideratum", "Desideratum 1"),
        Quantity("rms_dh", "RMS(dh)", "layer", "update", "desideratum", "Desideratum 1; Sec. 4"),
        Quantity("feature_change", "||dh||/||h||", "layer", "update", None, "Eq. 23, Fig. 2A"),
        Quantity("spectral_norm", "||W||_*", "tensor", "init", "condition", "Condition 1"),
        Quantity("update_norm", "||dW||_*", "tensor", "update", "condition", "Condition 1"),
        Quantity("relative_update", "||dW||_*/||W||_*", "tensor", "update", None, "Fig. 2B"),
        Quantity("relative_frobenius", "||dW||_F/||W||_F", "tensor", "update", None, "Fig. 2D"),
        Quantity("stable_rank", "srank(dW)", "tensor", "update", None, "Fig. 1, Lemma 1"),
        Quantity("alignment", "final-layer alignment", "final", "update", None, "Eq. 24, Fig. 2C"),
        # Structured architectures (measured where the model has them; see target_exponents).
        Quantity("rms_dwh", "RMS(dW h)", "final", "update", "desideratum", "Sec. 4; Eq. 9-10"),
        Quantity("rms_stream", "RMS(x) stream", "layer", "init", "desideratum", "Desideratum 1"),
        Quantity("rms_dstream", "RMS(dx) stream", "layer", "update", "desideratum", "Desideratum 1"),
        Quantity("rms_logits", "RMS(logits)", "layer", "init", "logits", "TP5 Def. 4.1"),
        Quantity("rms_dlogits", "RMS(d logits)", "layer", "update", "logits", "TP5 Def. 4.1"),
    )
}


@dataclass(frozen=True)
class Prediction:
    """The calculus' prediction for one quantity on one layer or tensor.

    ``expr`` is a sympy expression in the width symbols and :data:`ETA`; ``exponent`` its
    Theta-exponent (``None`` when identically zero); ``target`` the exponent Desideratum 1 or
    Condition 1 asks for (``None`` when the quantity is only reported).
    """

    quantity: str
    subject: str
    expr: sympy.Expr
    exponent: sympy.Rational | None
    target: sympy.Rational | None
    hidden: bool = True


@dataclass(frozen=True)
class FiniteWidthNote:
    """Why a layer's finite-width numbers are not yet on their asymptotic power law."""

    layer: str
    message: str


class NotAChain(SpecError):
    """The spec is not a chain the calculus can propagate through (the problems say why)."""


# The chain ----------------------------------------------------------------------------------------
_CHAIN_KINDS = ("linear", "embedding", "norm")


def chain_problems(spec: Spec) -> list[Problem]:
    """Why ``spec`` is not a chain of linear / embedding layers with norms between (empty if it is).

    The same family as :func:`paramcalc.models.build_model`'s chains: each weight layer's fan-in is
    the previous one's fan-out, an embedding only first, no tied weights.
    """
    problems: list[Problem] = []
    width: sympy.Expr | None = None
    seen_weight = False
    for layer in spec.layers:
        if layer.kind not in _CHAIN_KINDS or "block" in layer.attrs:
            what = (f"is part of the {layer.attrs.get('part', '')} projection of block "
                    f"{layer.attrs['block']!r}" if "block" in layer.attrs else f"is an {layer.kind} block")
            if layer.kind not in _CHAIN_KINDS:
                what = f"is an {layer.kind} block"
            return [Problem(layer.path, f"{layer.name!r} {what}; the calculus propagates through chains "
                                        "of linear, embedding and norm layers")]
        if layer.kind == "norm":
            if width is not None and not _same(layer.attrs["dim"], width):
                problems.append(Problem(layer.path, f"norm {layer.name!r} has dim {layer.attrs['dim']}, "
                                                    f"but the signal there has width {width}"))
            continue
        if layer.attrs.get("tie"):
            problems.append(Problem(f"{layer.path}.tie", f"{layer.name!r} uses a tied weight; the "
                                                         "chain calculus needs each layer's own tensor"))
        if layer.kind == "embedding" and seen_weight:
            problems.append(Problem(layer.path, f"embedding {layer.name!r} must be the first weight layer"))
        if width is not None and not _same(layer.attrs["fan_in"], width):
            problems.append(Problem(layer.path, f"{layer.name!r} has fan_in {layer.attrs['fan_in']}, but "
                                                f"the previous layer's fan_out is {width}"))
        width = layer.attrs["fan_out"]
        seen_weight = True
    if not seen_weight:
        problems.append(Problem("layers", "a chain needs at least one linear or embedding layer"))
    return problems


def _same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return a == b or sympy.expand(a - b) == 0


# The sweep ----------------------------------------------------------------------------------------
def sweep(spec: Spec, values: Iterable[int]) -> list[dict[str, int]]:
    """Width assignments for a sweep over the spec's first scaling width.

    Each value is the first scaling width's value; every other scaling width scales in proportion
    to its base (``n_heads = 12 * d_model / 768``) and must come out an integer; fixed widths keep
    their values. Raises :class:`SpecError` naming the width that does not.

    >>> import paramcalc
    >>> spec = paramcalc.load_spec({"name": "m", "widths": {"d": {"base": 64}, "h": {"base": 2}},
    ...                             "layers": [{"name": "fc", "fan_in": "d", "fan_out": "h"}]})
    >>> sweep(spec, [32, 128])
    [{'d': 32, 'h': 1}, {'d': 128, 'h': 4}]
    """
    scaling = [w for w in spec.widths.values() if w.scaling]
    if not scaling:
        raise SpecError([Problem("widths", "no scaling width (a {base: N} entry) to sweep over")],
                        source=spec.source)
    lead = scaling[0]
    out: list[dict[str, int]] = []
    problems: list[Problem] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(Problem("--widths", f"expected positive integers, got {value!r}"))
            continue
        at = {w.name: w.value for w in spec.widths.values()}
        for w in scaling:
            exact = Fraction(w.value * value, lead.value)
            if exact.denominator != 1:
                problems.append(Problem(
                    f"widths.{w.name}",
                    f"{lead.name} = {value} makes {w.name} = {w.value} * {value} / {lead.value} = "
                    f"{float(exact):g}, not an integer; choose {lead.name} a multiple of "
                    f"{lead.value // math.gcd(lead.value, w.value)}",
                ))
            at[w.name] = int(exact)
        out.append(at)
    if problems:
        raise SpecError(problems, source=spec.source)
    return out


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (NaN with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys)
           if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return math.nan
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def target_exponents(spec: Spec) -> dict[tuple[str, str], sympy.Rational]:
    """The exponents Desideratum 1 and Condition 1 ask for, keyed by ``(quantity, subject)``.

    Desideratum 1: RMS of every hidden feature (each weight layer's output but the last) and of its
    change, exponent 0; the output's change too (Sec. 4: a Theta(1) change of the loss per step).
    Condition 1: ``||W||_*`` and ``||dW||_*`` of every tensor like ``sqrt(fan_out / d_in)``, with
    ``d_in = 1`` for one-hot inputs, biases and gains (App. D, E). Any architecture: no chain needed.

    Structured architectures. The paper's conclusion applies both conditions "directly" to them, and
    App. B proves them for anything a tensor program expresses, transformers and Adam included. The
    targets extend layer by layer, all in natural norms (App. E):

    - a norm's output is a feature (RMS and its change, exponent 0), and so is its input: in a
      pre-norm transformer that is the residual stream (``rms_stream``, ``rms_dstream``), the sum
      of the embeddings and of every residual branch before it;
    - the output's own update ``dW_L h_{L-1}`` (``rms_dwh``, exponent 0): the first term of Eq. 9,
      which gives the output change its lower bound (Eq. 10), while Eq. 5 bounds the whole change
      from above;
    - a tied use (``tie:``): the layer computes with ``multiplier * W``, another layer's tensor seen in
      the use's own shape, and that matrix is held to Condition 1 *for the use*, keyed
      ``"<layer>.weight"``: a readout ``lm_head`` tied to ``wte`` asks ``||mu W||_*`` and
      ``||mu dW||_*`` like ``sqrt(vocab / d_model)`` while ``wte.weight`` as an embedding asks
      ``sqrt(d_model)``. Meeting both at once is what the tie's multiplier ``mu`` is for
      (:mod:`paramcalc.engine.ties`);
    - attention logits, per attention layer (``rms_logits``, ``rms_dlogits``, exponent 0). A logit is
      ``scale * q . k`` summed over ``d_head`` coordinates. At init ``q`` and ``k`` are independent
      with Theta(1) entries, so ``q . k ~ sqrt(d_head)``; after an update they are correlated (the
      updates of ``W_q`` and ``W_k`` are aligned with the same inputs, Claim 2), so ``q . k`` gains a
      part ``~ d_head``: TP5 Definition 4.1's scale ``1/d_head`` keeps logits Theta(1) as ``d_head``
      grows. Where ``d_head`` is fixed and heads scale (GPT-2's family) every scale is a constant, and
      logits are Theta(1) exactly when the queries, keys and their changes are; when the
      query/key updates grow with width (SP with Adam: hidden ``||dW||_* ~ n``) the logits blow up.
    """
    scaling_symbols = spec.scaling_symbols
    zero = sympy.Integer(0)
    weights = [layer.name for layer in spec.weight_layers]
    out: dict[tuple[str, str], sympy.Rational] = {}
    for name in weights:
        if name != weights[-1]:
            out[("rms_h", name)] = zero
        out[("rms_dh", name)] = zero
    if weights:
        out[("rms_dwh", weights[-1])] = zero
    for t in spec.tensors:
        exponent = theta_exponent(sympy.sqrt(t.fan_out / t.d_in), scaling_symbols)
        out[("spectral_norm", t.name)] = out[("update_norm", t.name)] = exponent
        for use in t.tied_uses:
            exponent = theta_exponent(sympy.sqrt(use.fan_out / use.d_in), scaling_symbols)
            out[("spectral_norm", f"{use.layer}.weight")] = exponent
            out[("update_norm", f"{use.layer}.weight")] = exponent
    for layer in spec.layers:
        if layer.kind == "norm":
            for quantity in ("rms_h", "rms_dh", "rms_stream", "rms_dstream"):
                out[(quantity, layer.name)] = zero
        elif layer.kind == "attention":
            out[("rms_logits", layer.name)] = out[("rms_dlogits", layer.name)] = zero
    return out


# The calculus -------------------------------------------------------------------------------------
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


class Scaling:
    """The calculus applied to one derivation: predictions keyed by ``(quantity, subject)``.

    ``subject`` is a layer name for feature quantities (``rms_h``, ``rms_dh``, ``feature_change``),
    a tensor name (``fc1.weight``, ``fc1.bias``) for tensor quantities, and the last weight layer
    for ``alignment`` and ``output_gradient``. Use :meth:`exponent` for the asymptotic claim,
    :meth:`evaluate` and :meth:`slope` for the finite-width one.
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

    def slope(
        self, quantity: str, subject: str, widths: Sequence[Mapping[str, int]], lr: float = 1.0
    ) -> float:
        """The log-log slope of the finite-width prediction across ``widths``, against the sweep width
        (the spec's first scaling width), fit as measurements are (:func:`loglog_slope`)."""
        expr = self.predictions[(quantity, subject)].expr
        lead = _lead(self.spec)
        xs = [float(self.derivation.resolve_widths(at)[lead]) for at in widths]
        ys = [numeric(expr, self._env(at, lr)) for at in widths]
        return loglog_slope(xs, ys)

    def calibrate_lr(self, widths: Mapping[str, int] | None = None, output_rms_change: float = 0.1) -> float:
        """The global learning rate whose predicted first step changes the output by ``output_rms_change``.

        Evaluated at ``widths`` (default: the spec's base widths, where the hyperparameters are
        tuned). Every update is linear in the global learning rate on the first step, so this is
        one division. It fixes a width-independent constant and cannot change any exponent.
        """
        per_unit = self.evaluate(widths, lr=1.0)[("rms_dh", self.output_layer)]
        if not (per_unit > 0 and math.isfinite(per_unit)):
            raise ValueError(f"the predicted output change per unit learning rate is {per_unit}")
        return output_rms_change / per_unit

    def notes(self, widths: Sequence[Mapping[str, int]]) -> list[FiniteWidthNote]:
        """Layers whose fixed fan-in still exceeds their fan-out at the smallest of ``widths``."""
        if not widths:
            return []
        at = self.derivation.resolve_widths(widths[0])
        env = {w.symbol: sympy.Integer(at[w.name]) for w in self.spec.widths.values()}
        out = []
        for note in self._notes:
            layer = self.spec.layer(note.layer)
            dense = layer.kind == "linear" and layer.attrs.get("input", "dense") == "dense"
            d_in = layer.attrs["fan_in"] if dense else ONE
            if sympy.sympify(layer.attrs["fan_out"]).xreplace(env) < sympy.sympify(d_in).xreplace(env):
                out.append(note)
        return out


def _lead(spec: Spec) -> str:
    return next(w.name for w in spec.widths.values() if w.scaling)


def scaling(derivation: Derivation, loss: str = "mse", centered: bool = False) -> Scaling:
    """Run the first-step calculus on ``derivation`` (see the module docstring).

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
    folded = derivation if all(p.multiplier == ONE for p in derivation.values()) else derivation.folded()
    opt = folded.optimizer
    c_f, c_b, c_4 = ACTIVATION_MOMENTS.get(spec.activation, (ONE, ONE, ONE))

    # Ops in forward order: ("act", layer) | ("weight", layer) | ("norm", layer), with the norm of
    # each op's input at init.
    first = next(layer for layer in spec.layers if layer.kind != "norm")
    a: sympy.Expr = sympy.sqrt(first.attrs["fan_in"]) if _dense(first) else ONE
    ops: list[tuple[str, object, sympy.Expr]] = []
    features: dict[str, _Features] = {}
    previous_linear = False
    for layer in spec.layers:
        if layer.kind == "norm":
            ops.append(("norm", layer, a))
            a = folded[layer.params["weight"]].init_mean * sympy.sqrt(layer.attrs["dim"])
            continue
        if previous_linear:
            ops.append(("act", layer, a))  # Assumption 2: ||phi(h)|| = Theta(||h||)
            a = c_f * a
        ops.append(("weight", layer, a))
        w = folded[layer.params["weight"]]
        fan_out = layer.attrs["fan_out"]
        h = w.init_std * sympy.sqrt(fan_out) * a
        if "bias" in layer.params:
            h = h + folded[layer.params["bias"]].init_std * sympy.sqrt(fan_out)
        features[layer.name] = _Features(layer.name, fan_out, h, a, weight=w.name)
        a = h
        previous_linear = layer.kind == "linear"
    names = list(features)
    n_out = features[names[-1]].width
    if loss == "mse" and centered:
        default_gradient: sympy.Expr = 2 * sympy.sqrt(n_out) / n_out  # (f - f_0) - y = -y at init
    elif loss == "mse":
        # f - y with targets y of RMS 1, independent of the output at init; mean over outputs.
        default_gradient = 2 * sympy.sqrt(a**2 + n_out) / n_out
    else:
        default_gradient = ONE  # softmax - onehot: Theta(1) whatever the logits

    # Backward at init: the gradient at each op's output.
    g: sympy.Expr = default_gradient
    grad_out: list[sympy.Expr] = [ZERO] * len(ops)
    for i in reversed(range(len(ops))):
        kind, layer, a_in = ops[i]
        grad_out[i] = g
        if kind == "weight":
            features[layer.name].grad = g  # type: ignore[union-attr]
            if _dense(layer):
                g = folded[layer.params["weight"]].init_std * sympy.sqrt(layer.attrs["fan_in"]) * g  # type: ignore[union-attr]
        elif kind == "norm":
            g = folded[layer.params["weight"]].init_mean * sympy.sqrt(layer.attrs["dim"]) / a_in * g  # type: ignore[union-attr]
        else:
            g = c_b * g

    # Updates and feature changes, forward again: (along, generic) parts of the change.
    along: sympy.Expr = ZERO
    generic: sympy.Expr = ZERO
    after_act = False
    tensors: dict[str, _Tensor] = {}
    notes: list[FiniteWidthNote] = []
    for i, (kind, layer, a_in) in enumerate(ops):
        if kind == "act":
            after_act = True
            continue
        if kind == "norm":
            dim = layer.attrs["dim"]  # type: ignore[union-attr]
            scale = folded[layer.params["weight"]].init_mean * sympy.sqrt(dim) / a_in  # type: ignore[union-attr]
            along, generic = scale * along, scale * generic
            for pname in layer.params.values():  # type: ignore[union-attr]
                p = folded[pname]
                # The gradient of a gain is g * x_hat with RMS(x_hat) = 1; of a bias, g.
                update = opt.update_norm(ETA * p.lr, grad_out[i], ONE, dim)
                tensors[pname] = _vector(p, dim, update)
                along = along + update
            continue
        f = features[layer.name]  # type: ignore[union-attr]
        w = folded[f.weight]
        fan_in, fan_out = layer.attrs["fan_in"], layer.attrs["fan_out"]  # type: ignore[union-attr]
        dense = _dense(layer)
        d_in = fan_in if dense else ONE
        norm = w.init_std * (sympy.sqrt(fan_out) + sympy.sqrt(fan_in))
        update = opt.update_norm(ETA * w.lr, f.grad * a_in, d_in, fan_out)
        tensors[w.name] = _Tensor(w.name, norm, w.init_std * sympy.sqrt(fan_out * fan_in), update,
                                  w.init_std == ZERO)
        if after_act:
            gain_along, gain_in, gain_generic = c_b, c_4, c_b
        else:
            gain_along = gain_in = gain_generic = ONE
        f.dh_in = sympy.sqrt((gain_in * along) ** 2 + (gain_generic * generic) ** 2)  # ||dh'_{l-1}||
        if dense:
            new_along = gain_along * w.init_std * sympy.sqrt(fan_in) * along
            new_generic = w.init_std * sympy.sqrt(fan_out) * sympy.sqrt(
                (gain_in * along) ** 2 + (gain_generic * generic) ** 2)
        else:
            new_along = new_generic = ZERO  # a one-hot input does not change
        new_along = new_along + update * a_in
        if "bias" in layer.params:  # type: ignore[union-attr]
            b = folded[layer.params["bias"]]  # type: ignore[union-attr]
            b_update = opt.update_norm(ETA * b.lr, f.grad, ONE, fan_out)
            tensors[b.name] = _vector(b, fan_out, b_update)
            new_along = new_along + b_update
        along, generic = new_along, new_generic
        f.dh = sympy.sqrt(along**2 + generic**2)
        after_act = False
        note = _finite_width_note(layer, w, d_in, fan_out, spec.scaling_symbols)  # type: ignore[arg-type]
        if note is not None:
            notes.append(note)

    predictions = _predictions(list(features.values()), tensors, spec.scaling_symbols, target_exponents(spec))
    return Scaling(derivation, loss, predictions, names, default_gradient, notes, centered)


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
    number of tokens, and the constant drifts (:mod:`paramcalc.verify.run` keeps the tokens few for
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
            norm = p.init_std * (sympy.sqrt(t.fan_out) + sympy.sqrt(t.fan_in))
        if norm != ZERO:
            add("spectral_norm", t.name, norm)
    for layer, ts in folded.tied.items():
        use = ts.use
        norm = ts.init_std * (sympy.sqrt(use.fan_out) + sympy.sqrt(use.fan_in))
        if norm != ZERO:
            add("spectral_norm", f"{layer}.weight", norm)
    layers = [layer.name for layer in spec.weight_layers]
    return Scaling(derivation, "local", predictions, layers, ONE, ())


def _dense(layer: object) -> bool:
    return layer.kind == "linear" and layer.attrs.get("input", "dense") == "dense"  # type: ignore[attr-defined]


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
