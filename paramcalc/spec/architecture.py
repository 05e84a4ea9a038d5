"""From a validated spec to the parameter tensors the engine works on.

Each parameter tensor maps an input space of dimension ``d_in`` to ``fan_out`` (paper App. E):
``d_in = fan_in`` for dense inputs, and ``d_in = 1`` for one-hot (sparse) inputs, for biases (whose
input is the constant 1, App. D) and for gain vectors. Its *role* follows from which of ``d_in``
and ``fan_out`` grow with width (the counting rule of TP5 / the ``mup`` package, computed by
:func:`paramcalc.conditions.role`):

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
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import sympy

from paramcalc.conditions import natural_d_in
from paramcalc.kinds import LayerKind, get_kind
from paramcalc.symbolic import theta_exponent

if TYPE_CHECKING:
    from paramcalc.spec.topology import Topology

__all__ = ["DepthBlock", "Layer", "Spec", "Tensor", "TiedUse", "Width"]

Role = Literal["input", "hidden", "output", "fixed"]
Layout = Literal["out_in", "in_out", "vector", "conv", "param"]
ONE = sympy.Integer(1)


@dataclass(frozen=True)
class Width:
    """A width symbol: fixed (``value`` is the dimension) or scaling (``value`` is the base).

    ``depth``: a scaling width that counts the blocks of a ``repeat`` (``n_layers: {base: 4}``), the
    depth ``L``. It is no dimension of any tensor and not part of the width axis: Theta-exponents in
    width (:attr:`Spec.scaling_symbols`) hold it fixed, and widths in proportion leave it alone.
    """

    name: str
    symbol: sympy.Symbol
    value: int
    scaling: bool
    depth: bool = False


@dataclass(frozen=True)
class DepthBlock:
    """A ``repeat`` whose count is a scaling width: its blocks are residual branches whose number
    ``L`` grows (:mod:`paramcalc.engine.depth`). ``count`` is how many blocks this spec expanded
    (the base ``L`` unless built with :meth:`Spec.at_depth`); tensors inside are named ``<name>.<i>.``."""

    name: str
    width: str
    count: int

    def holds(self, name: str) -> bool:
        """Whether the layer or tensor ``name`` lies inside one of this repeat's blocks
        (``blocks.3.attn``; not the repeat's own constant ``blocks.residual``)."""
        return name.startswith(self.name + ".") and name[len(self.name) + 1:].split(".", 1)[0].isdigit()

    def index(self, name: str) -> int:
        """The block index of ``name`` (``blocks.3.attn.q.weight`` -> 3)."""
        return int(name[len(self.name) + 1:].split(".", 1)[0])


@dataclass(frozen=True)
class TiedUse:
    """Another layer's use of a tensor (``tie:``): the same storage, seen with this use's shape.

    A readout tied to a token embedding uses the embedding's ``vocab x dim`` table as its
    ``dim -> vocab`` matrix: ``role`` is the role this use would have on its own.
    """

    layer: str
    fan_in: sympy.Expr
    fan_out: sympy.Expr
    input: Literal["dense", "sparse"]
    gain: sympy.Expr
    role: Role
    path: str

    @property
    def d_in(self) -> sympy.Expr:
        return natural_d_in(self.fan_in, self.input)


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor as the engine sees it.

    ``fan_in``/``fan_out`` are sympy expressions in the width symbols. ``layout`` says how the
    tensor is stored in torch: ``out_in`` is ``nn.Linear``'s ``(fan_out, fan_in)``, ``in_out`` is
    ``nn.Embedding``'s ``(fan_in, fan_out)`` = ``(num_embeddings, dim)``, ``vector`` is
    ``(fan_out,)``; ``conv`` is a convolution's ``(out, in/groups, *kernel)`` and ``param`` a raw
    tensor's own shape, both given by ``dims``; ``shape`` is that torch shape. As a matrix
    (:attr:`matrix_shape`, the one whose spectral norm Condition 1 is about) a convolution is
    ``out x (in/groups * prod(kernel))``, the map from a patch to a pixel's output (im2col), and a
    raw tensor is its rows of width ``fan_out``. ``tied_uses`` lists other layers that use this same
    tensor (``tie:`` in the spec).
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
    layout: Layout
    path: str
    tied_uses: tuple[TiedUse, ...] = ()
    dims: tuple[sympy.Expr, ...] = ()
    #: ``features``: the layer asked for the feature-preserving init (``init: features``, App. A).
    init_form: Literal["norm", "features"] = "norm"

    @property
    def shape(self) -> tuple[sympy.Expr, ...]:
        if self.dims:
            return self.dims
        if self.layout == "vector":
            return (self.fan_out,)
        if self.layout == "in_out":
            return (self.fan_in, self.fan_out)
        return (self.fan_out, self.fan_in)

    @property
    def matrix_shape(self) -> tuple[sympy.Expr, sympy.Expr]:
        """The stored tensor as a matrix, in the order torch stores it: ``(rows, cols)``."""
        if self.layout in ("out_in", "conv"):
            return (self.fan_out, self.fan_in)
        if self.layout == "in_out":
            return (self.fan_in, self.fan_out)
        if self.layout == "param":
            rows = sympy.Mul(*self.dims) / self.fan_out
            return (rows, self.fan_out)
        return (self.fan_out, ONE)

    @property
    def d_in(self) -> sympy.Expr:
        """Dimension of the input space in natural norms (App. E): 1 unless the input is dense."""
        return natural_d_in(self.fan_in, self.input)


@dataclass(frozen=True)
class Layer:
    """One module of the model, after ``repeat`` blocks are expanded.

    ``kind`` is the registry name of the layer's kind (``attention`` and ``mlp`` blocks are layers
    whose projections appear as their own ``linear`` layers, e.g. ``blocks.0.attn.q``). ``params``
    maps the module's parameter names to tensor names (a tied weight names the owner's tensor).
    ``attrs`` holds the kind's resolved attributes (dims as sympy expressions, flags): a typed
    :class:`~paramcalc.kinds.base.LayerAttrs` per kind (``LinearAttrs``, ``NormAttrs``, ...), also
    readable by name.
    """

    name: str
    kind: str
    path: str
    params: Mapping[str, str]
    attrs: Mapping[str, object]

    @property
    def definition(self) -> LayerKind:
        """The registered kind that owns what is particular to this layer (:mod:`paramcalc.kinds`)."""
        return get_kind(self.kind)


@dataclass(frozen=True)
class Spec:
    """A loaded, validated architecture: widths and parameter tensors, ready for :func:`derive`."""

    name: str
    widths: Mapping[str, Width]
    tensors: tuple[Tensor, ...]
    activation: str
    source: str
    layers: tuple[Layer, ...] = ()
    model: Any = field(default=None, repr=False)  # the validated schema.SpecModel
    #: What a reader should check (an inferred spec's raw parameters, attention it did not know).
    notes: tuple[str, ...] = ()
    #: The repeats whose count scales (depth); empty when depth is fixed.
    depth_blocks: tuple[DepthBlock, ...] = ()
    #: Each block of a ``residual: true`` repeat (``blocks.0``, ``blocks.1``, ...): a residual branch
    #: ``x + r * block(x)`` of a chain (:mod:`paramcalc.spec.topology`).
    residual_blocks: tuple[str, ...] = ()

    def annotated(self, *, source: str, notes: tuple[str, ...] = ()) -> Spec:
        """This spec under another ``source`` name, with ``notes``."""
        return replace(self, source=source, notes=tuple(notes))

    def to_yaml(self) -> str:
        """The spec as a YAML file: ``load_spec`` of it gives the same tensors and derivation.
        Fields at their defaults are left out; :attr:`notes` become comments at the top."""
        import yaml

        data = self.model.model_dump(mode="python", exclude_defaults=True)
        data = {"name": data["name"], "widths": data.get("widths", {}),
                **{k: v for k, v in data.items() if k not in ("name", "widths")}}
        head = f"# paramcalc spec {self.name!r}" + (f", {self.source}" if self.source else "") + "\n"
        head += "".join(f"# note: {note}\n" for note in self.notes)
        return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)

    @property
    def symbols(self) -> dict[str, sympy.Symbol]:
        return {w.name: w.symbol for w in self.widths.values()}

    @property
    def scaling_symbols(self) -> frozenset[sympy.Symbol]:
        """The width axis: scaling widths, the depth left out."""
        return frozenset(w.symbol for w in self.widths.values() if w.scaling and not w.depth)

    @property
    def depth_symbols(self) -> frozenset[sympy.Symbol]:
        """The depth axis: scaling repeat counts (empty when depth is fixed)."""
        return frozenset(w.symbol for w in self.widths.values() if w.depth)

    def depth_block(self, name: str) -> DepthBlock | None:
        """The scaling repeat that the layer or tensor ``name`` lies in, if any."""
        return next((b for b in self.depth_blocks if b.holds(name)), None)

    def at_depth(self, depths: Mapping[str, int]) -> Spec:
        """This spec with each scaling repeat expanded to the count ``depths`` gives it (its width's
        name -> L); the widths keep their bases, so a derivation's depth factors read ``L / L_base``."""
        from paramcalc.spec.builder import build_spec

        depths = {k: v for k, v in depths.items() if k in self.widths and self.widths[k].depth}
        if all(b.count == depths.get(b.width, b.count) for b in self.depth_blocks):
            return self
        built = build_spec(self.model, self.source, depths=depths)
        return replace(built, notes=self.notes)

    @property
    def base_values(self) -> dict[sympy.Symbol, sympy.Integer]:
        """The spec's own widths: fixed values and the bases of scaling widths."""
        return {w.symbol: sympy.Integer(w.value) for w in self.widths.values()}

    @property
    def weight_layers(self) -> tuple[Layer, ...]:
        """The linear and embedding layers, in order: those computing a feature with a weight
        matrix (attention and MLP blocks count through their projections)."""
        return tuple(layer for layer in self.layers if layer.definition.chain_role == "weight")

    @cached_property
    def topology(self) -> Topology:
        """The spec's family (chain or transformer) and forward plan, computed once."""
        from paramcalc.spec.topology import topology

        return topology(self)

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def exponent(self, expr: sympy.Expr) -> sympy.Rational | None:
        return theta_exponent(expr, self.scaling_symbols)
