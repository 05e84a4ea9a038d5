"""Expanding a validated spec into parameter tensors and layers.

:class:`Builder` walks the layers (expanding ``repeat`` blocks), hands each entry to its kind
(:meth:`paramcalc.kinds.LayerKind.expand`), and offers the kinds what they share: parsing a
dimension or a constant against the declared widths, a tensor's role (the counting rule in
:mod:`paramcalc.spec.architecture`), adding a weight (or a tied use of another layer's), a vector,
or the linear projections of a block. Every problem found is collected, so one error names them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import sympy

from paramcalc import conditions
from paramcalc.errors import Problem, SpecError
from paramcalc.kinds import get_kind
from paramcalc.kinds.linear import LinearLayer
from paramcalc.spec.architecture import ONE, DepthBlock, Layer, Layout, Role, Spec, Tensor, TiedUse, Width
from paramcalc.spec.expr import ExprError, parse_expr
from paramcalc.symbolic import theta_exponent, width_symbol

__all__ = ["MAX_LAYERS", "Builder", "build_spec", "repeat_counts"]

#: Layers a spec may expand to, repeats multiplied out (GPT-2 XL has about 300; a chain of 10000 fits).
MAX_LAYERS = 50_000


class Builder:
    """Parses expressions and expands layers into tensors, collecting every problem found."""

    def __init__(self, model: Any, depths: Mapping[str, int] | None = None) -> None:
        self.model = model
        self.problems: list[Problem] = []
        self.widths: dict[str, Width] = {}
        counts = repeat_counts(model.layers)
        for name, value in model.widths.items():
            scaling = not isinstance(value, int)
            self.widths[name] = Width(
                name, width_symbol(name), value if isinstance(value, int) else value.base, scaling,
                depth=scaling and name in counts,
            )
        #: How many blocks a scaling repeat expands to: its base, or what :meth:`Spec.at_depth` asks.
        self.depths = {n: w.value for n, w in self.widths.items() if w.depth} | dict(depths or {})
        self.depth_blocks: list[DepthBlock] = []
        self.residual_blocks: list[str] = []
        self.symbols = {name: w.symbol for name, w in self.widths.items()}
        self.base = {w.symbol: sympy.Integer(w.value) for w in self.widths.values()}
        self.scaling = frozenset(w.symbol for w in self.widths.values() if w.scaling and not w.depth)
        self._depth_symbols = {w.symbol: n for n, w in self.widths.items() if w.depth}
        self._dim_cache: dict[object, sympy.Expr] = {}
        self._role_cache: dict[tuple[sympy.Expr, sympy.Expr], Role] = {}
        self.tensors: list[Tensor] = []
        self.layers: list[Layer] = []
        self._seen: dict[str, str] = {}
        self._ties: list[tuple[str, str, TiedUse, str]] = []  # (layer, target, use, storage shape)

    # Expressions ---------------------------------------------------------------------------------
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
        depth = sorted(self._depth_symbols[s] for s in expr.free_symbols if s in self._depth_symbols)
        if depth:
            raise ExprError(f"{raw!r} uses {depth[0]}, which counts the blocks of a repeat whose count "
                            "scales (a depth): a depth is no dimension")
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
            self._role_cache[key] = conditions.role(d_in, fan_out, self.scaling)
        return self._role_cache[key]

    # Layers --------------------------------------------------------------------------------------
    def build(self) -> None:
        self._expand(self.model.layers, "", "layers")
        self._resolve_ties()

    def _expand(self, layers: list, prefix: str, base_path: str) -> None:
        for i, layer in enumerate(layers):
            path = f"{base_path}[{i}]"
            name = prefix + layer.name
            if layer.kind == "repeat":
                count = self._count(layer, path)
                size = self._size(layer.layers, path)
                if len(self._seen) + count * size > MAX_LAYERS:
                    self.problems.append(Problem(f"{path}.repeat", (
                        f"the spec would expand to more than {MAX_LAYERS} layers (repeats multiply: "
                        f"{count} x {size} here)")))
                    return
                if isinstance(layer.repeat, str) and layer.repeat in self.depths:
                    self._depth_block(name, layer.repeat, count, path)
                if layer.residual:
                    self.residual_blocks += [f"{name}.{k}" for k in range(count)]
                for k in range(count):
                    self._expand(layer.layers, f"{name}.{k}.", f"{path}.layers")
                continue
            if self.claim(name, path):
                get_kind(_kind_name(layer)).expand(self, name, layer, path)

    def _depth_block(self, name: str, width: str, count: int, path: str) -> None:
        if any(b.holds(name) for b in self.depth_blocks):
            self.problems.append(Problem(f"{path}.repeat", (
                f"{name!r} repeats {width} inside a repeat that already scales with depth: one "
                "scaling repeat count per nest")))
        self.depth_blocks.append(DepthBlock(name, width, count))

    def _size(self, layers: list, path: str) -> int:
        """Layers a block expands to, counting nested repeats, computed before expanding it."""
        total = 0
        for i, layer in enumerate(layers):
            if layer.kind == "repeat":
                count = self._count(layer, f"{path}.layers[{i}]", quiet=True)
                total += count * self._size(layer.layers, path)
            else:
                total += 1
            if total > MAX_LAYERS:
                break
        return total

    def claim(self, name: str, path: str) -> bool:
        if name in self._seen:
            self.problems.append(Problem(
                f"{path}.name", f"duplicate layer name {name!r} (first used at {self._seen[name]})"
            ))
            return False
        self._seen[name] = path
        return True

    def _count(self, block: Any, path: str, quiet: bool = False) -> int:
        if isinstance(block.repeat, int):
            return block.repeat
        width = self.widths.get(block.repeat)
        value = None if width is None else self.depths.get(width.name, width.value)
        if quiet:  # sizing a block: problems are reported when it is expanded
            return 0 if value is None else min(value, 10_000)
        if value is None:
            names = ", ".join(self.widths) or "none"
            self.problems.append(Problem(
                f"{path}.repeat",
                f"expected an integer or a width symbol (a fixed count, or {{base: N}} for a depth that "
                f"scales; widths: {names}), got {block.repeat!r}",
            ))
            return 0
        if value > 10_000 or value < 1:
            self.problems.append(Problem(f"{path}.repeat", f"a repeat count from 1 to 10000, got {value}"))
            return 0
        return value

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def vector(
        self, layer: str, param: str, kind: Literal["bias", "gain"], fan_out: sympy.Expr,
        init: Literal["normal", "zeros", "ones"], path: str, owner: str | None = None,
    ) -> Tensor:
        """A vector ``layer.param`` (``owner``: the spec layer it belongs to, if not ``layer``)."""
        name = f"{layer}.{param}" if layer else param
        t = Tensor(
            name=name, layer=owner or layer, param=param, kind=kind, fan_in=ONE,
            fan_out=fan_out, input="constant", gain=ONE, init=init,
            role=self.role(ONE, fan_out), layout="vector", path=path,
        )
        self.tensors.append(t)
        return t

    def weight(
        self, name: str, fan_in: sympy.Expr, fan_out: sympy.Expr, input: Literal["dense", "sparse"],
        gain: sympy.Expr, layout: Layout, path: str, tie: str | None,
    ) -> str:
        """Add a weight, or record a tied use of another layer's weight; return the tensor name."""
        d_in = conditions.natural_d_in(fan_in, input)
        role = self.role(d_in, fan_out)
        if tie is not None:
            use = TiedUse(name, fan_in, fan_out, input, gain, role, path)
            shape = (fan_in, fan_out) if layout == "in_out" else (fan_out, fan_in)
            self._ties.append((name, tie, use, shape))
            return f"{tie}.weight"
        self.tensors.append(Tensor(
            name=f"{name}.weight", layer=name, param="weight", kind="weight", fan_in=fan_in,
            fan_out=fan_out, input=input, gain=gain, init="normal", role=role, layout=layout,
            path=path,
        ))
        return f"{name}.weight"

    def add_layer(
        self, name: str, kind: str, path: str, params: Mapping[str, str], attrs: Mapping[str, object]
    ) -> None:
        """Record a layer (after its tensors, added with :meth:`weight` and :meth:`vector`)."""
        self.layers.append(Layer(name, kind, path, params, attrs))

    def projections(
        self, block: str, parts: Mapping[str, tuple[str | int, str | int]], names: object, bias: bool,
        path: str, layout: Layout = "out_in", packed: Sequence[str] = (),
    ) -> dict[str, str]:
        """The linear layers of an attention or MLP block, named ``<block>.<names.part>``; the
        ``packed`` parts are held by the block itself (tensors ``<block>.<names.part>_weight``)."""
        linear = get_kind("linear")
        subs = {}
        for part, (fan_in, fan_out) in parts.items():
            name = subs[part] = f"{block}.{getattr(names, part)}"
            self.claim(name, path)
            entry = LinearLayer(name=name, fan_in=fan_in, fan_out=fan_out, bias=bias, layout=layout)
            linear.expand(self, name, entry, path, block=block, part=part,  # type: ignore[attr-defined]
                          packed=part in packed)
        return subs

    def rename_tensor(self, name: str, torch_name: str) -> str:
        """Give the tensor ``name`` (just added) another torch name (a packed projection's tensors
        are its block's ``in_proj_weight`` and ``in_proj_bias``); return it."""
        self._replace(name, {"name": torch_name})
        return torch_name

    def shape_tensor(self, name: str, layout: Layout, dims: tuple[sympy.Expr, ...]) -> None:
        """Give the tensor ``name`` (just added) a stored shape of its own (a convolution's kernel,
        a raw tensor's shape)."""
        self._replace(name, {"layout": layout, "dims": tuple(dims)})

    def init_form(self, name: str, form: str, path: str, tied: bool = False) -> None:
        """Record the layer's ``init:`` on its weight ``name`` (just added). ``features`` drops the
        spectral rule's shrink, which is a finite-width constant only where the input dimension is
        fixed; where it scales (a readout, a hidden layer) the shrink is the rule itself."""
        if form == "norm":
            return
        if tied:
            self.problem(f"{path}.init", "init: features needs a weight of the layer's own, not tie:")
            return
        t = next(t for t in reversed(self.tensors) if t.name == name)
        if t.d_in.free_symbols & self.scaling:
            self.problem(f"{path}.init",
                         f"init: features keeps the input's features at every width and is only for a fixed "
                         f"input dimension; this layer's input dimension {t.d_in} scales (leave init out)")
            return
        self._replace(name, {"init_form": form})

    def _replace(self, name: str, changes: dict[str, Any]) -> None:
        for i in range(len(self.tensors) - 1, -1, -1):
            if self.tensors[i].name == name:
                self.tensors[i] = replace(self.tensors[i], **changes)
                return
        raise KeyError(name)

    def _resolve_ties(self) -> None:
        owners = {t.layer: t for t in self.tensors if t.param == "weight" and t.kind == "weight"}
        uses: dict[str, list[TiedUse]] = {}
        for name, target, use, shape in self._ties:
            owner = owners.get(target)
            if owner is None:
                tied_layers = {n for n, *_ in self._ties}
                why = "itself tied" if target in tied_layers else "not a layer with its own weight"
                self.problems.append(Problem(f"{use.path}.tie", f"cannot tie {name!r} to {target!r}: {why}"))
                continue
            if tuple(owner.shape) != tuple(shape):
                fmt = " x ".join
                self.problems.append(Problem(
                    f"{use.path}.tie",
                    f"cannot tie {name!r} to {target!r}: stored shapes differ "
                    f"({fmt(map(str, shape))} vs {fmt(map(str, owner.shape))})",
                ))
                continue
            uses.setdefault(owner.name, []).append(use)
        for i, t in enumerate(self.tensors):
            if t.name in uses:
                self.tensors[i] = replace(t, tied_uses=tuple(uses[t.name]))


def _kind_name(entry: Any) -> str:
    """The registry name of a validated layer entry's kind (``layernorm`` -> ``norm``)."""
    from paramcalc.spec import schema

    return schema._TAGS[entry.kind]


def repeat_counts(layers: list) -> set[str]:
    """The width names used as repeat counts, nested repeats included."""
    names: set[str] = set()
    for layer in layers:
        if layer.kind == "repeat":
            if isinstance(layer.repeat, str):
                names.add(layer.repeat)
            names |= repeat_counts(layer.layers)
    return names


def build_spec(model: Any, source: str, depths: Mapping[str, int] | None = None) -> Spec:
    """Resolve a validated ``schema.SpecModel`` into a :class:`Spec`; raise :class:`SpecError`.
    ``depths`` expands each scaling repeat to that many blocks (default: its base)."""
    builder = Builder(model, depths)
    builder.build()
    if builder.problems:
        raise SpecError(builder.problems, source=source)
    return Spec(
        name=model.name,
        widths=builder.widths,
        tensors=tuple(builder.tensors),
        activation=model.activation,
        source=source,
        layers=tuple(builder.layers),
        model=model,
        depth_blocks=tuple(builder.depth_blocks),
        residual_blocks=tuple(builder.residual_blocks),
    )
