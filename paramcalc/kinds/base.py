"""What a layer kind is: one class that owns everything particular to it.

A kind declares its spec schema (a pydantic model, validated behind the ``kind`` discriminator), how
it expands into parameter tensors (names, stored shapes and layout, ``d_in``, role: through the spec
builder's helpers), where it sits in a forward plan (:mod:`paramcalc.spec.topology`), its torch
module, its flax leaf names, its step in the first-step calculus, and any constants the derivation
adds for it (an attention layer's logit scale). Every other stage asks the kind; none branches on
its name. Adding a kind is one module that subclasses :class:`LayerKind` and calls
:func:`paramcalc.kinds.register_kind`; see ``docs/architecture.md``.

Roles in a plan (``chain_role``):

``weight``
    computes a feature with a weight matrix ``fan_out x fan_in`` (linear, embedding): the layers
    whose outputs Desideratum 1 is about;
``gain``
    acts on the signal coordinate by coordinate and keeps its width (norms): in a chain or on a
    transformer's stream;
``None``
    a block with layers inside (attention, MLP): a residual branch of a transformer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import sympy

    from paramcalc.spec.architecture import Layer

__all__ = ["LayerAttrs", "LayerKind"]


@dataclass(frozen=True)
class LayerAttrs(Mapping[str, Any]):
    """A kind's resolved attributes of one layer (dims as sympy expressions, flags), typed per kind
    by a subclass. Also read by name (``layer.attrs["fan_in"]``, ``"block" in layer.attrs``): a field
    that is ``None`` counts as absent."""

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._names() if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


class LayerKind:
    """Base class of the layer kinds; subclasses set the class attributes and override what differs."""

    #: The ``kind:`` of the spec entry, and the registry key.
    name: ClassVar[str]
    #: Other ``kind:`` values the same schema accepts (``layernorm`` and ``rmsnorm`` for ``norm``).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: The pydantic model of the spec entry (a :class:`paramcalc.kinds.fields.SpecEntry`).
    schema: ClassVar[type]
    chain_role: ClassVar[Literal["weight", "gain"] | None] = None
    #: A weight layer that reads token ids (an embedding): first in a chain or a transformer.
    reads_ids: ClassVar[bool] = False
    #: In a chain, the activation is applied to the input of the weight layer after this one.
    activates: ClassVar[bool] = False
    #: A transformer block, added to the residual stream (after its pre-norm, if any).
    residual_branch: ClassVar[bool] = False
    #: Mixes positions of a sequence (attention): a transformer needs at least one such layer.
    mixes_tokens: ClassVar[bool] = False
    #: Parameter name in torch -> leaf name in flax (``weight -> kernel``).
    flax_leaves: ClassVar[Mapping[str, str]] = {}
    #: The layer is a module whose output is linear in its weight plus its bias, so a forward
    #: hook can apply its multipliers (not so for a raw ``parameter``).
    hooks_forward: ClassVar[bool] = True
    #: Its features have positions (a convolution's channels x pixels): a chain averages them
    #: over positions before the next weight layer that is not spatial.
    spatial: ClassVar[bool] = False

    # The spec stage ------------------------------------------------------------------------------
    def expand(self, builder: Any, name: str, entry: Any, path: str) -> None:
        """Add this layer's tensors and :class:`~paramcalc.spec.architecture.Layer` to ``builder``."""
        raise NotImplementedError

    # The forward plan ----------------------------------------------------------------------------
    def width_in(self, layer: Layer) -> sympy.Expr:
        """The width of the signal this layer reads (a weight's fan_in, a norm's dim)."""
        raise NotImplementedError

    def width_out(self, layer: Layer) -> sympy.Expr:
        """The width of the signal this layer writes."""
        return self.width_in(layer)

    def dense(self, layer: Layer) -> bool:
        """Whether the layer's input is a dense vector (not one-hot ids, not a constant)."""
        return False

    # Models --------------------------------------------------------------------------------------
    def torch_module(self, layer: Layer, dims: Any, factory: Mapping[str, Any], activation: str) -> Any:
        """The ``torch.nn.Module`` of the layer at integer widths (``dims(expr, where) -> int``).

        Blocks return their container without the projections, which are layers of their own;
        a projection whose block holds its tensors (``packed``) returns None."""
        raise NotImplementedError

    # The first-step calculus (gain kinds) --------------------------------------------------------
    def calculus_scale(self, layer: Layer, folded: Any, norm_in: sympy.Expr) -> sympy.Expr:
        """``||out|| / ||in||`` at init for a gain kind: the factor on the forward signal, on the
        backward signal and on a change passing through (``folded``: the folded derivation, whose
        ``init_mean`` of a gain is its value at init)."""
        raise NotImplementedError

    def calculus_forward(self, layer: Layer, folded: Any, norm_in: sympy.Expr) -> sympy.Expr:
        """The norm of a gain kind's output at init, given its input's."""
        return self.calculus_scale(layer, folded, norm_in) * norm_in

    def calculus_input_rms(self, layer: Layer, folded: Any, norm_in: sympy.Expr) -> sympy.Expr:
        """The RMS of what a gain kind's gain multiplies: its gradient is the backward signal
        times that input, coordinate by coordinate."""
        import sympy

        return norm_in / sympy.sqrt(self.width_in(layer))

    # JAX ---------------------------------------------------------------------------------------
    def flax_leaf(self, layer: Layer, param: str) -> tuple[str, str]:
        """Where a parameter of the layer lives in the flat flax dict: ``(module, leaf)``."""
        if param not in self.flax_leaves:
            raise KeyError(param)
        return layer.name, self.flax_leaves[param]

    def flax_shape(self, tensor: Any) -> tuple[Any, ...]:
        """A tensor's shape in flax: a weight ``(fan_in, fan_out)`` (Dense kernel, Embed table),
        a vector ``(fan_out,)``, a raw tensor its own shape."""
        if tensor.layout == "vector":
            return (tensor.fan_out,)
        if tensor.layout == "param":
            return tuple(tensor.dims)
        return (tensor.fan_in, tensor.fan_out)

    # The derivation ------------------------------------------------------------------------------
    def constants(self, layer: Layer, rule: Any, base: Mapping[Any, Any]) -> dict[str, sympy.Expr]:
        """Derived constants that are not parameters, keyed ``"<layer>.<what>"``."""
        return {}

    def __repr__(self) -> str:
        return f"<layer kind {self.name!r}>"
