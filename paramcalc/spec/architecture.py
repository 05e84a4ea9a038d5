"""From a validated spec to the parameter tensors the engine works on.

Each parameter tensor maps an input space of dimension ``d_in`` to ``fan_out`` (paper App. E):
``d_in = fan_in`` for dense inputs, and ``d_in = 1`` for one-hot (sparse) inputs, for biases (whose
input is the constant 1, App. D) and for gain vectors. Its *role* follows from which of ``d_in``
and ``fan_out`` grow with width (the counting rule of TP5 / the ``mup`` package):

=========  ===============  ================  ====================================
role       d_in scales      fan_out scales    examples
=========  ===============  ================  ====================================
input      no               yes               first layer, embeddings, biases, gains
hidden     yes              yes               d x d, d -> 4d
output     yes              no                readout d -> n_out
fixed      no               no                a layer between fixed dimensions
=========  ===============  ================  ====================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import sympy

from paramcalc.errors import Problem, SpecError
from paramcalc.spec.expr import ExprError, parse_expr
from paramcalc.spec.schema import LinearLayer, NormLayer, SpecModel
from paramcalc.symbolic import theta_exponent, width_symbol

__all__ = ["Spec", "Tensor", "Width"]

Role = Literal["input", "hidden", "output", "fixed"]
ONE = sympy.Integer(1)


@dataclass(frozen=True)
class Width:
    """A width symbol: fixed (``value`` is the dimension) or scaling (``value`` is the base)."""

    name: str
    symbol: sympy.Symbol
    value: int
    scaling: bool


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor as the engine sees it.

    ``fan_in``/``fan_out`` are sympy expressions in the width symbols. ``layout`` says how the
    tensor is stored in torch: ``out_in`` is ``nn.Linear``'s ``(fan_out, fan_in)``, ``in_out`` is
    ``nn.Embedding``'s ``(fan_in, fan_out)`` = ``(num_embeddings, dim)``, ``vector`` is
    ``(fan_out,)``; ``shape`` is that torch shape.
    """

    name: str
    layer: str
    param: str
    kind: Literal["weight", "bias", "gain"]
    fan_in: sympy.Expr
    fan_out: sympy.Expr
    input: Literal["dense", "sparse", "constant"]
    gain: sympy.Expr
    init: Literal["normal", "zeros", "ones"]
    role: Role
    layout: Literal["out_in", "in_out", "vector"]
    path: str

    @property
    def shape(self) -> tuple[sympy.Expr, ...]:
        if self.layout == "vector":
            return (self.fan_out,)
        if self.layout == "in_out":
            return (self.fan_in, self.fan_out)
        return (self.fan_out, self.fan_in)

    @property
    def d_in(self) -> sympy.Expr:
        """Dimension of the input space in natural norms (App. E): 1 unless the input is dense."""
        return self.fan_in if self.input == "dense" else ONE


@dataclass(frozen=True)
class Spec:
    """A loaded, validated architecture: widths and parameter tensors, ready for :func:`derive`."""

    name: str
    widths: Mapping[str, Width]
    tensors: tuple[Tensor, ...]
    activation: str
    source: str
    model: SpecModel = field(repr=False)

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        return {w.name: w.symbol for w in self.widths.values()}

    @property
    def scaling_symbols(self) -> frozenset[sympy.Symbol]:
        return frozenset(w.symbol for w in self.widths.values() if w.scaling)

    @property
    def base_values(self) -> dict[sympy.Symbol, sympy.Integer]:
        """The spec's own widths: fixed values and the bases of scaling widths."""
        return {w.symbol: sympy.Integer(w.value) for w in self.widths.values()}

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def exponent(self, expr: sympy.Expr) -> sympy.Rational | None:
        return theta_exponent(expr, self.scaling_symbols)


class _Builder:
    """Parses expressions and expands layers into tensors, collecting every problem found."""

    def __init__(self, model: SpecModel) -> None:
        self.model = model
        self.problems: list[Problem] = []
        self.widths: dict[str, Width] = {}
        for name, value in model.widths.items():
            scaling = not isinstance(value, int)
            self.widths[name] = Width(
                name, width_symbol(name), value if isinstance(value, int) else value.base, scaling
            )
        self.symbols = {name: w.symbol for name, w in self.widths.items()}
        self.base = {w.symbol: sympy.Integer(w.value) for w in self.widths.values()}
        self.scaling = frozenset(w.symbol for w in self.widths.values() if w.scaling)
        self._dim_cache: dict[object, sympy.Expr] = {}
        self._role_cache: dict[tuple[sympy.Expr, sympy.Expr], Role] = {}

    def dim(self, raw: int | str, path: str) -> sympy.Expr | None:
        key = raw if isinstance(raw, str) else ("int", raw)
        if key in self._dim_cache:
            return self._dim_cache[key]
        try:
            expr = self._dim(raw)
        except ExprError as exc:
            self.problems.append(Problem(path, str(exc)))
            return None
        self._dim_cache[key] = expr
        return expr

    def _dim(self, raw: int | str) -> sympy.Expr:
        if isinstance(raw, int):
            if raw <= 0 or raw > 10**12:
                raise ExprError(f"a dimension must be a positive integer, got {raw}")
            return sympy.Integer(raw)
        expr = parse_expr(raw, self.symbols)
        at_base = expr.xreplace(self.base)
        if not (at_base.is_Integer and at_base > 0):
            raise ExprError(
                f"{raw!r} must be a positive integer at the spec's widths, but is {at_base}"
            )
        exponent = theta_exponent(expr, self.scaling)
        if exponent is None or exponent < 0:
            raise ExprError(f"{raw!r} shrinks as width grows; a dimension must not")
        # A dimension must stay positive as widths grow (catches 4096 - d).
        for factor in (2**10, 2**20):
            grown = expr.xreplace({s: self.base[s] * factor for s in self.scaling})
            grown = grown.xreplace(self.base)
            if not grown.is_positive:
                raise ExprError(f"{raw!r} is not positive when widths grow ({factor}x base)")
        return expr

    def const(self, raw: int | float | str, path: str) -> sympy.Expr | None:
        try:
            if isinstance(raw, str):
                value = parse_expr(raw, {}, functions=True)
            elif isinstance(raw, float):
                value = sympy.Rational(repr(raw))
            else:
                value = sympy.Integer(raw)
            if not value.is_positive:
                raise ExprError(f"expected a positive constant, got {raw!r}")
            return value
        except (ExprError, TypeError, ValueError) as exc:
            self.problems.append(Problem(path, str(exc)))
            return None

    def role(self, d_in: sympy.Expr, fan_out: sympy.Expr) -> Role:
        key = (d_in, fan_out)
        if key not in self._role_cache:
            self._role_cache[key] = self._role(d_in, fan_out)
        return self._role_cache[key]

    def _role(self, d_in: sympy.Expr, fan_out: sympy.Expr) -> Role:
        scales_in = (theta_exponent(d_in, self.scaling) or 0) > 0
        scales_out = (theta_exponent(fan_out, self.scaling) or 0) > 0
        if scales_in and scales_out:
            return "hidden"
        if scales_out:
            return "input"
        if scales_in:
            return "output"
        return "fixed"

    def tensors(self) -> list[Tensor]:
        out: list[Tensor] = []
        seen_layers: dict[str, str] = {}
        for i, layer in enumerate(self.model.layers):
            path = f"layers[{i}]"
            if isinstance(layer, LinearLayer):
                made = self._linear(layer, path)
            elif isinstance(layer, NormLayer):
                made = self._norm(layer, path)
            if layer.name in seen_layers:
                self.problems.append(
                    Problem(f"{path}.name", f"duplicate layer name {layer.name!r} "
                            f"(first used at {seen_layers[layer.name]})")
                )
                continue
            seen_layers[layer.name] = path
            out.extend(made)
        return out

    def _vector(
        self, layer: str, param: str, kind: Literal["bias", "gain"], fan_out: sympy.Expr,
        init: Literal["normal", "zeros", "ones"], path: str,
    ) -> Tensor:
        return Tensor(
            name=f"{layer}.{param}", layer=layer, param=param, kind=kind, fan_in=ONE,
            fan_out=fan_out, input="constant", gain=ONE, init=init,
            role=self.role(ONE, fan_out), layout="vector", path=path,
        )

    def _linear(self, layer: LinearLayer, path: str) -> list[Tensor]:
        fan_in = self.dim(layer.fan_in, f"{path}.fan_in")
        fan_out = self.dim(layer.fan_out, f"{path}.fan_out")
        gain = self.const(layer.gain, f"{path}.gain")
        if fan_in is None or fan_out is None or gain is None:
            return []
        d_in = fan_in if layer.input == "dense" else ONE
        weight = Tensor(
            name=f"{layer.name}.weight", layer=layer.name, param="weight", kind="weight",
            fan_in=fan_in, fan_out=fan_out, input=layer.input, gain=gain, init="normal",
            role=self.role(d_in, fan_out), layout="out_in", path=path,
        )
        out = [weight]
        if layer.bias:
            init: Literal["normal", "zeros"] = "normal" if layer.bias_init == "normal" else "zeros"
            out.append(self._vector(layer.name, "bias", "bias", fan_out, init, path))
        return out

    def _norm(self, layer: NormLayer, path: str) -> list[Tensor]:
        dim = self.dim(layer.dim, f"{path}.dim")
        if dim is None:
            return []
        out = [self._vector(layer.name, "weight", "gain", dim, "ones", path)]
        if layer.bias:
            out.append(self._vector(layer.name, "bias", "bias", dim, "zeros", path))
        return out


def build_spec(model: SpecModel, source: str) -> Spec:
    """Resolve a validated :class:`SpecModel` into a :class:`Spec`; raise :class:`SpecError`."""
    builder = _Builder(model)
    tensors = builder.tensors()
    if builder.problems:
        raise SpecError(builder.problems, source=source)
    return Spec(
        name=model.name,
        widths=builder.widths,
        tensors=tuple(tensors),
        activation=model.activation,
        source=source,
        model=model,
    )
