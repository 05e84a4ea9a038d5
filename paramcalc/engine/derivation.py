"""The derivation: per-tensor init std, learning-rate factor and forward multiplier.

``derive(spec, parametrization, optimizer)`` applies one rule to every parameter tensor. Tensors
of the same shape share one rule evaluation, expressions are built in closed form (no
``simplify``), Theta-exponents come from exponent arithmetic on the expression trees, and numbers
from one pass of :func:`paramcalc.symbolic.numeric` over the distinct expressions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field, replace
from typing import Any

import sympy

from paramcalc import conditions
from paramcalc.engine import depth, factors, ties
from paramcalc.engine.optimizers import Optimizer, get_optimizer
from paramcalc.engine.rules import Rule, TensorShape, get_rule
from paramcalc.engine.ties import TiedScale, tie
from paramcalc.spec import Spec, Tensor, TiedUse, load_spec
from paramcalc.symbolic import finite_values, numeric, theta_exponent
from paramcalc.widths import fixed_width_message, resolve_widths  # noqa: F401  (re-exported)

__all__ = ["FACTORS", "QUANTITIES", "Derivation", "ParamScale", "abc_shift", "derive"]

QUANTITIES = ("init_std", "lr", "multiplier")
#: Per-tensor factors on the optimizer's other hyperparameters (:mod:`paramcalc.engine.factors`).
FACTORS = ("eps", "weight_decay")
ZERO = sympy.Integer(0)
ONE = sympy.Integer(1)


@dataclass(frozen=True)
class ParamScale:
    """The derived scales of one parameter tensor.

    The effective weight is ``multiplier * W`` with ``W ~ N(init_mean, init_std**2)`` at init and
    step size ``lr * global_lr``. ``init_std`` is 0 for tensors initialised to a constant
    (zero biases, norm gains at ``init_mean = 1``). ``optimizer`` names the optimizer that trains
    the tensor (under Muon, AdamW for every tensor that is not a hidden matrix), whose global
    learning rate ``lr`` multiplies; ``eps`` and ``weight_decay`` are the factors on its epsilon and
    on the user's weight decay (1 at the base widths; ``weight_decay`` 0 where the tensor is not
    decayed), see :mod:`paramcalc.engine.factors`.
    """

    name: str
    tensor: Tensor
    init_std: sympy.Expr
    lr: sympy.Expr
    multiplier: sympy.Expr
    init_mean: sympy.Expr = ZERO
    eps: sympy.Expr = ONE
    weight_decay: sympy.Expr = ONE
    optimizer: str = ""
    scaling: frozenset[sympy.Symbol] = field(default=frozenset(), repr=False)
    _exponents: dict[str, sympy.Rational | None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def role(self) -> str:
        return self.tensor.role

    def expr(self, quantity: str) -> sympy.Expr:
        if quantity not in QUANTITIES + FACTORS:
            raise KeyError(quantity)
        return getattr(self, quantity)

    @property
    def exponents(self) -> dict[str, sympy.Rational | None]:
        """Theta-exponent in width of each quantity (``None`` where it is identically 0)."""
        if self._exponents is not None:
            return dict(self._exponents)
        return _exponents(self.init_std, self.lr, self.multiplier, self.scaling)

    def factor_exponents(self) -> dict[str, sympy.Rational | None]:
        """Theta-exponents of :data:`FACTORS` (``None`` where identically 0)."""
        return {q: theta_exponent(getattr(self, q), self.scaling) for q in FACTORS}


class Derivation(Mapping[str, ParamScale]):
    """A parametrization applied to a spec: a read-only mapping ``"<layer>.weight" -> ParamScale``."""

    def __init__(
        self,
        spec: Spec,
        parametrization: str,
        optimizer: Optimizer,
        form: str,
        params: Mapping[str, ParamScale],
        constants: Mapping[str, sympy.Expr] | None = None,
        tied: Mapping[str, TiedScale] | None = None,
        *,
        policy: tuple[str, tuple[str, ...]] = ("independent", ("weight",)),
    ) -> None:
        self.spec = spec
        self.parametrization = parametrization
        self.optimizer = optimizer
        self.form = form
        self._params = dict(params)
        #: Derived constants that are not parameters, e.g. ``"blocks.0.attn.scale"``, the
        #: attention-logit scale to pass to attention; sympy expressions in the widths.
        self.constants: dict[str, sympy.Expr] = dict(constants or {})
        #: Layers that use another layer's tensor (``tie:``), keyed by the using layer's name:
        #: the forward multiplier of that use and what it trains with. Not parameters themselves.
        self.tied: dict[str, TiedScale] = dict(tied or {})
        #: The weight-decay policy (``independent`` or ``coupled``) and the tensor kinds decayed.
        self.weight_decay, self.decay = policy[0], tuple(policy[1])
        #: The depth exponent: branch multiplier ``(L / L_base)^-alpha`` (:mod:`paramcalc.engine.depth`);
        #: None where depth does not scale or is not scaled (``depth_alpha="none"``); set by derive.
        self.depth_alpha: sympy.Rational | None = None
        #: Optimizer name -> the law, for every optimizer that trains a tensor here.
        self.laws: dict[str, Optimizer] = {o.name: o for o in optimizer.trained_with}

    def law(self, name: str) -> Optimizer:
        """The optimizer (its update-size law) that trains tensor ``name``."""
        return self.laws.get(self[name].optimizer, self.optimizer)

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ParamScale:
        try:
            return self._params[name]
        except KeyError:
            close = [n for n in self._params if n.split(".")[0] == str(name).split(".")[0]]
            hint = f"; did you mean one of {close[:4]}" if close else ""
            raise KeyError(f"{name!r} is not a parameter of {self.spec.name!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    # The dict's own views (read-only) instead of Mapping's, which look every name up again.
    def keys(self) -> KeysView[str]:
        return self._params.keys()

    def values(self) -> ValuesView[ParamScale]:
        return self._params.values()

    def items(self) -> ItemsView[str, ParamScale]:
        return self._params.items()

    def __repr__(self) -> str:
        return (
            f"Derivation(spec={self.spec.name!r}, parametrization={self.parametrization!r}, "
            f"optimizer={self.optimizer.name!r}, form={self.form!r}, params={len(self)})"
        )

    # Widths and numbers -----------------------------------------------------------------------
    def resolve_widths(self, widths: Mapping[str, int] | None = None) -> dict[str, int]:
        """Complete ``widths`` with the spec's values (bases for scaling widths); validate it."""
        return resolve_widths(self.spec, widths)

    def evaluate(self, widths: Mapping[str, int] | None = None) -> dict[str, dict[str, float]]:
        """Numbers at the given widths: ``{name: {"init_std", "lr", "multiplier", "eps",
        "weight_decay": float}}``.

        Width symbols left out take the spec's value (the base for scaling widths).
        """
        at = self._numeric_widths(widths)
        memo: dict[sympy.Basic, float] = {}
        return finite_values({
            name: {q: numeric(getattr(p, q), at, memo) for q in QUANTITIES + FACTORS}
            for name, p in self._params.items()
        }, self.spec.source, widths)

    def evaluate_constants(self, widths: Mapping[str, int] | None = None) -> dict[str, float]:
        """Numbers for :attr:`constants` (attention-logit scales) at the given widths."""
        at = self._numeric_widths(widths)
        memo: dict[sympy.Basic, float] = {}
        return finite_values({name: numeric(expr, at, memo) for name, expr in self.constants.items()},
                             self.spec.source, widths)

    def evaluate_tied(self, widths: Mapping[str, int] | None = None) -> dict[str, dict[str, float]]:
        """Numbers for :attr:`tied`: ``{layer: {"multiplier", "lr", "init_std"}}`` (effective)."""
        at = self._numeric_widths(widths)
        memo: dict[sympy.Basic, float] = {}
        return {
            layer: {q: numeric(getattr(ts, q), at, memo) for q in ("multiplier", "lr", "init_std")}
            for layer, ts in self.tied.items()
        }

    def tie_gaps(self, widths: Mapping[str, int] | None = None) -> dict[str, ties.TieGap]:
        """Each tied use at ``widths`` against its role (:func:`paramcalc.engine.ties.tie_gaps`)."""
        return ties.tie_gaps(self, self._numeric_widths(widths))

    def _numeric_widths(self, widths: Mapping[str, int] | None) -> dict[sympy.Symbol, float]:
        values = self.resolve_widths(widths)
        return {w.symbol: float(values[w.name]) for w in self.spec.widths.values()}

    def exponents(self) -> dict[str, dict[str, sympy.Rational | None]]:
        """Theta-exponents in width: every scaling width proportional to n, fixed widths constant."""
        return {name: p.exponents for name, p in self._params.items()}

    def tied_exponents(self) -> dict[str, dict[str, sympy.Rational | None]]:
        """Theta-exponents of each tied use's effective init std, lr and multiplier (:attr:`tied`)."""
        return {
            layer: {q: theta_exponent(getattr(ts, q), self.spec.scaling_symbols) for q in QUANTITIES}
            for layer, ts in self.tied.items()
        }

    def at_depth(self, depths: Mapping[str, int] | None) -> Derivation:
        """This derivation with each scaling repeat expanded to the depth ``depths`` names (width
        name -> L): every block takes the first block's scales (:func:`paramcalc.engine.depth.at_depth`)."""
        return depth.at_depth(self, depths)

    # Forms ------------------------------------------------------------------------------------
    def shift(self, theta: Mapping[str, Any] | Callable[[ParamScale], Any]) -> Derivation:
        """Move to an equivalent form with the abc-symmetry; see :func:`abc_shift`."""
        return abc_shift(self, theta)

    def folded(self) -> Derivation:
        """The equivalent form with every multiplier 1: effective init std and learning rate."""
        return abc_shift(self, lambda p: 1 / p.multiplier)


def abc_shift(
    derivation: Derivation, theta: Mapping[str, Any] | Callable[[ParamScale], Any]
) -> Derivation:
    """The abc-symmetry of TP5 Lemma J.1, as one function.

    For each tensor with factor ``t`` (from the mapping, default 1, or ``theta(param)``):
    ``multiplier -> multiplier * t``, ``init_std -> init_std / t``, ``init_mean -> init_mean / t``,
    ``lr -> lr / t**p`` with ``p = 2`` for SGD and ``p = 1`` for Adam. The effective weight
    ``multiplier * W``, at init and after every step, is unchanged (exactly for SGD; for Adam up to
    its ``eps``), so both derivations train the same function.
    """
    cache: dict[tuple[Any, ...], tuple[sympy.Expr, ...]] = {}
    params: dict[str, ParamScale] = {}
    for name, ps in derivation.items():
        t = theta(ps) if callable(theta) else theta.get(name, ONE)
        t = sympy.sympify(t)
        if t == ONE:
            params[name] = ps
            continue
        if not t.is_positive:
            raise ValueError(f"abc-shift factor for {name} must be positive, got {t}")
        law = derivation.law(name)
        p = law.symmetry_power
        key = (ps.multiplier, ps.init_std, ps.init_mean, ps.lr, ps.eps, ps.weight_decay, t, law.name)
        if key not in cache:
            cache[key] = (*conditions.abc_shift(ps.multiplier, ps.init_std, ps.init_mean, ps.lr, t, p),
                          *factors.shifted(ps.eps, ps.weight_decay, t, p, law.has_eps))
        mult, std, mean, lr, eps, wd = cache[key]
        params[name] = replace(
            ps, multiplier=mult, init_std=std, init_mean=mean, lr=lr, eps=eps, weight_decay=wd,
            _exponents=None,
        )
    form = derivation.form if derivation.form.endswith("(shifted)") else f"{derivation.form} (shifted)"
    tied = {}
    for layer, ts in derivation.tied.items():
        t = theta(derivation[ts.tensor]) if callable(theta) else theta.get(ts.tensor, ONE)
        # The stored tensor is divided by t: each use multiplies by t to compute the same thing.
        tied[layer] = replace(ts, multiplier=ts.multiplier * sympy.sympify(t))
    shifted = Derivation(
        derivation.spec, derivation.parametrization, derivation.optimizer, form, params,
        derivation.constants, tied, policy=(derivation.weight_decay, derivation.decay),
    )
    shifted.depth_alpha = derivation.depth_alpha
    return shifted


def _exponents(
    init_std: sympy.Expr, lr: sympy.Expr, multiplier: sympy.Expr, scaling: frozenset[sympy.Symbol]
) -> dict[str, sympy.Rational | None]:
    return {
        "init_std": theta_exponent(init_std, scaling),
        "lr": theta_exponent(lr, scaling),
        "multiplier": theta_exponent(multiplier, scaling),
    }


def _shape(t: Tensor | TiedUse, base: Mapping[sympy.Symbol, sympy.Integer]) -> TensorShape:
    d_in = t.d_in
    stored = getattr(t, "matrix_shape", None)
    return TensorShape(
        d_in=d_in,
        fan_out=t.fan_out,
        d_in_base=d_in.xreplace(base),
        fan_out_base=t.fan_out.xreplace(base),
        role=t.role,
        gain=t.gain,
        stored=stored,
        stored_base=tuple(s.xreplace(base) for s in stored) if stored else None,
        init_form=getattr(t, "init_form", "norm"),
    )


def derive(
    spec: Spec | Mapping[str, Any] | str,
    parametrization: str = "spectral",
    optimizer: str = "sgd",
    *,
    form: str | None = None,
    weight_decay: str = "independent",
    decay: Collection[str] = ("weight",),
    muon_adjust: str | None = None,
    depth_alpha: float | str | None = None,
) -> Derivation:
    """Derive per-tensor init std, learning-rate factor, multiplier, and epsilon and weight-decay factors.

    ``parametrization`` is one of ``spectral``, ``mup``, ``ntp``, ``sp``; ``optimizer`` one of
    ``sgd``, ``adam``, ``adamw``, ``lion``, ``muon``; ``form`` selects among a rule's equivalent forms
    (muP: ``table3``, the default, or ``table8``). ``weight_decay`` is the policy (``independent``:
    ``lr * weight_decay`` kept at its base value; ``coupled``: torch's plain weight decay) and
    ``decay`` the tensor kinds decayed (:mod:`paramcalc.engine.factors`). ``muon_adjust`` is
    ``torch.optim.Muon``'s ``adjust_lr_fn`` (``original``, the default, or ``match_rms_adamw``).
    ``depth_alpha`` (where a repeat's count scales): the branch multiplier ``(L/L_base)^-alpha`` with
    its learning-rate and epsilon factors inside the blocks, 1 (CompleteP, the default) to 1/2
    (depth-muP), or ``"none"`` (:mod:`paramcalc.engine.depth`).

    >>> d = derive({"name": "m", "widths": {"d": {"base": 64}, "n0": 10},
    ...             "layers": [{"name": "fc", "fan_in": "n0", "fan_out": "d"}]})
    >>> d["fc.weight"].lr
    d/n0
    """
    spec = load_spec(spec)  # type: ignore[arg-type]
    rule: Rule = get_rule(parametrization)
    opt = get_optimizer(optimizer, muon_adjust=muon_adjust)
    form = form or rule.forms[0]
    if form not in rule.forms:
        raise ValueError(
            f"parametrization {rule.name!r} has forms {', '.join(rule.forms)}; got {form!r}"
        )
    decay = tuple(decay) if not isinstance(decay, str) else decay
    factors.check_policy(weight_decay, decay)
    scaling = spec.scaling_symbols
    # Base widths replace only the scaling symbols: fixed ones stay symbols, so that muP's width
    # multipliers read d/256 rather than 12*d/n_in.
    base = {s: v for s, v in spec.base_values.items() if s in scaling}
    alpha = depth.parse_alpha(depth_alpha, spec)
    params = _param_scales(spec, rule, opt, form, base, (weight_decay, decay))
    params, constants = depth.apply_depth(spec, params, {o.name: o for o in opt.trained_with}, alpha)
    tied = _tied_scales(spec, rule, opt, form, base)
    for layer in spec.layers:
        constants.update(layer.definition.constants(layer, rule, base))
    from paramcalc.kinds.attention import warn_attention_as_linears

    warn_attention_as_linears(spec)
    d = Derivation(spec, rule.name, opt, form, params, constants, tied, policy=(weight_decay, decay))
    d.depth_alpha = alpha
    return d


def _param_scales(
    spec: Spec, rule: Rule, opt: Optimizer, form: str, base: Mapping[sympy.Symbol, sympy.Integer],
    policy: tuple[str, tuple[str, ...]],
) -> dict[str, ParamScale]:
    """Every tensor's scales; ``policy`` is the weight-decay policy and the decayed kinds."""
    weight_decay, decay = policy
    scaling = spec.scaling_symbols
    scale_eps = getattr(rule, "scales_eps", False)
    # Tensors of one shape share one rule evaluation and one exponent computation.
    cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    params: dict[str, ParamScale] = {}
    reads_ids = {layer.name: layer.definition.reads_ids for layer in spec.layers}
    for t in spec.tensors:
        law = opt.assign(t)
        kind = factors.decay_kind(t, reads_ids.get(t.layer, False))
        key = (t.d_in, t.fan_out, t.role, t.gain, t.init, t.init_form, t.matrix_shape, law.name, kind)
        found = cache.get(key)
        if found is None:
            scales = rule.scales(_shape(t, base), law, form)
            init_std, mean = scales.init_std, ZERO
            if t.init != "normal":
                # Constant init (zero biases, unit gains): the rule's std is not used.
                init_std = ZERO
                mean = ONE / scales.multiplier if t.init == "ones" else ZERO
            eps = factors.eps_factor(scales.multiplier, t.fan_out, base) if law.has_eps and scale_eps else ONE
            wd = factors.weight_decay_factor(scales.lr, base, kind, weight_decay, decay)
            exps = _exponents(init_std, scales.lr, scales.multiplier, scaling)
            found = cache[key] = (init_std, scales.lr, scales.multiplier, mean, eps, wd, exps)
        init_std, lr, multiplier, mean, eps, wd, exps = found
        params[t.name] = ParamScale(t.name, t, init_std, lr, multiplier, mean, eps, wd, law.name,
                                    scaling, exps)
    return params


def _tied_scales(
    spec: Spec, rule: Rule, opt: Optimizer, form: str, base: Mapping[sympy.Symbol, sympy.Integer]
) -> dict[str, TiedScale]:
    """The scales of each tied use, seen from the tensor it shares."""
    tied: dict[str, TiedScale] = {}
    for t in spec.tensors:
        if t.tied_uses:
            law = opt.assign(t)
            owner = rule.scales(_shape(t, base), law, form)
            for use in t.tied_uses:
                use_rule = rule.scales(_shape(use, base), law, form)
                tied[use.layer] = tie(owner, use_rule, use, t.name, law, spec.scaling_symbols)
    return tied
