"""``norm`` / ``layernorm`` / ``rmsnorm``: a normalisation layer's vector parameters, a gain
(initialised to ones) and an optional bias, each an ``n x 1`` matrix whose input is the normalised
feature (``d_in = 1``, App. D).

In the first-step calculus a norm maps its input to RMS 1 times its gain: the forward signal, the
backward signal and any change passing through are all multiplied by ``gain * sqrt(dim) / ||h||``.
"""

from dataclasses import dataclass
from typing import Any, Literal

import sympy
from pydantic import StrictBool

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Dim, Name, SpecEntry

__all__ = ["KIND", "Norm", "NormAttrs", "NormLayer"]


class NormLayer(SpecEntry):
    """A normalisation layer's vector parameters: a gain (initialised to ones) and optional bias.

    ``layernorm`` has a bias by default, ``rmsnorm`` none; ``norm`` is either, by ``bias``.
    """

    kind: Literal["norm", "layernorm", "rmsnorm"]
    name: Name
    dim: Dim
    bias: StrictBool | None = None

    @property
    def has_bias(self) -> bool:
        return self.bias if self.bias is not None else self.kind == "layernorm"


@dataclass(frozen=True)
class NormAttrs(LayerAttrs):
    dim: sympy.Expr
    norm: Literal["layernorm", "rmsnorm"]


class Norm(LayerKind):
    """Its layers' attributes: :class:`NormAttrs`."""

    name = "norm"
    aliases = ("layernorm", "rmsnorm")
    schema = NormLayer
    chain_role = "gain"
    flax_leaves = {"weight": "scale", "bias": "bias"}

    def expand(self, builder: Any, name: str, entry: NormLayer, path: str) -> None:
        dim = builder.dim(entry.dim, f"{path}.dim")
        if dim is None:
            return
        params = {"weight": builder.vector(name, "weight", "gain", dim, "ones", path).name}
        if entry.has_bias:
            params["bias"] = builder.vector(name, "bias", "bias", dim, "zeros", path).name
        norm = "rmsnorm" if entry.kind == "rmsnorm" else "layernorm"
        builder.add_layer(name, self.name, path, params, NormAttrs(dim, norm))

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["dim"]

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from paramcalc.modules import LayerNorm, RMSNorm

        cls = RMSNorm if layer.attrs["norm"] == "rmsnorm" else LayerNorm
        return cls(dims(layer.attrs["dim"], layer.path), bias="bias" in layer.params, **factory)

    def calculus_forward(self, layer: Any, folded: Any, norm_in: Any) -> Any:
        import sympy

        return folded[layer.params["weight"]].init_mean * sympy.sqrt(layer.attrs["dim"])

    def calculus_scale(self, layer: Any, folded: Any, norm_in: Any) -> Any:
        return self.calculus_forward(layer, folded, norm_in) / norm_in

    def calculus_input_rms(self, layer: Any, folded: Any, norm_in: Any) -> Any:
        import sympy

        return sympy.Integer(1)  # the normalised feature


KIND = Norm()
