"""``linear``: a weight matrix ``fan_out x fan_in`` (torch ``nn.Linear`` layout), optionally a bias.

Its input is dense (``d_in = fan_in``) or one-hot (``input: sparse``, ``d_in = 1``: App. E). In a
chain the activation is applied to the input of the next weight layer.
"""

from dataclasses import dataclass
from typing import Any, Literal

import sympy
from pydantic import StrictBool

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Const, Dim, InitForm, Name, SpecEntry

__all__ = ["KIND", "Linear", "LinearAttrs", "LinearLayer"]


class LinearLayer(SpecEntry):
    """A weight matrix ``fan_out x fan_in`` (torch ``nn.Linear`` layout), optionally with a bias.

    ``tie: other`` makes this layer use the weight of layer ``other`` (same stored shape) instead
    of a tensor of its own, e.g. a readout tied to the token embedding. ``layout: in_out`` stores
    the weight ``(fan_in, fan_out)``, as Hugging Face's ``Conv1D`` (GPT-2) does; the matrix is
    the same, only its storage is transposed. ``init: features`` asks the spectral rule for the
    feature-preserving init of a first layer with a fixed input dimension (the paper's App. A).
    """

    kind: Literal["linear"] = "linear"
    name: Name
    fan_in: Dim
    fan_out: Dim
    input: Literal["dense", "sparse"] = "dense"
    bias: StrictBool = False
    gain: Const = 1
    bias_init: Literal["zeros", "normal"] = "zeros"
    tie: Name | None = None
    layout: Literal["out_in", "in_out"] = "out_in"
    init: InitForm = "norm"


@dataclass(frozen=True)
class LinearAttrs(LayerAttrs):
    """A linear layer's attributes; a projection of a block also names its ``block`` and ``part``,
    and is ``packed`` when the block holds its tensors (``<block>.in_proj_weight`` of torch's
    ``nn.MultiheadAttention``), so that it has no module of its own."""

    fan_in: sympy.Expr
    fan_out: sympy.Expr
    input: Literal["dense", "sparse"]
    tie: str | None = None
    block: str | None = None
    part: str | None = None
    layout: Literal["out_in", "in_out"] = "out_in"
    packed: bool = False


class Linear(LayerKind):
    """Its layers' attributes: :class:`LinearAttrs`."""

    name = "linear"
    schema = LinearLayer
    chain_role = "weight"
    activates = True
    flax_leaves = {"weight": "kernel", "bias": "bias"}

    def expand(self, builder: Any, name: str, entry: LinearLayer, path: str, **attrs: Any) -> None:
        fan_in = builder.dim(entry.fan_in, f"{path}.fan_in")
        fan_out = builder.dim(entry.fan_out, f"{path}.fan_out")
        gain = builder.const(entry.gain, f"{path}.gain")
        if fan_in is None or fan_out is None or gain is None:
            return
        packed = attrs.get("packed", False)  # tensors <name>_weight, <name>_bias held by the block
        weight = builder.weight(name, fan_in, fan_out, entry.input, gain, entry.layout, path, entry.tie)
        builder.init_form(weight, entry.init, path, tied=entry.tie is not None)
        if packed:
            weight = builder.rename_tensor(weight, f"{name}_weight")
        params = {"weight": weight}
        if entry.bias:
            init = "normal" if entry.bias_init == "normal" else "zeros"
            bias = builder.vector(name, "bias", "bias", fan_out, init, path).name
            params["bias"] = builder.rename_tensor(bias, f"{name}_bias") if packed else bias
        builder.add_layer(name, self.name, path, params,
                          LinearAttrs(fan_in, fan_out, entry.input, entry.tie, layout=entry.layout, **attrs))

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["fan_in"]

    def width_out(self, layer: Any) -> Any:
        return layer.attrs["fan_out"]

    def dense(self, layer: Any) -> bool:
        return layer.attrs.get("input", "dense") == "dense"

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from torch import nn

        if layer.attrs.get("packed"):
            return None  # its block's module holds its tensors

        from paramcalc.modules import InOutLinear, OneHotLinear

        if layer.attrs["layout"] == "in_out":
            cls: Any = InOutLinear
        else:
            cls = OneHotLinear if layer.attrs["input"] == "sparse" else nn.Linear
        return cls(dims(layer.attrs["fan_in"], layer.path), dims(layer.attrs["fan_out"], layer.path),
                   bias="bias" in layer.params, **factory)


KIND = Linear()
