"""``conv``: a 1-, 2- or 3-D convolution ``out x in/groups x kernel`` (torch ``nn.ConvNd``).

A convolution applies one matrix to every patch of its input (im2col): the matrix maps the
``in/groups * prod(kernel)`` numbers of a patch to ``out`` channels, so that is its ``d_in``
(dense) and Condition 1 is about the spectral norm of the weight reshaped ``(out, in/groups *
prod(kernel))`` (paper Sec. 3's argument holds per patch: features are the rows over batch and
positions). Kernel sizes are fixed dimensions (integers); channels and groups are expressions.
In a chain, the features of the last convolution are averaged over positions before the next
linear layer (global average pooling, as in a ResNet's head).
"""

from dataclasses import dataclass
from math import prod
from typing import Annotated, Any, Literal

import sympy
from pydantic import Field, StrictBool, StrictInt

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Dim, InitForm, Name, SpecEntry

__all__ = ["KIND", "Conv", "ConvAttrs", "ConvLayer"]

Kernel = Annotated[StrictInt, Field(gt=0, le=1024)]


class ConvLayer(SpecEntry):
    """A convolution ``in_channels -> out_channels``; ``kernel_size`` an integer (``ndim``-D
    square, default 2-D) or one integer per dimension (1 to 3). ``init: features``: as for
    ``linear`` (a patch embedding whose input ``in_channels * prod(kernel)`` is fixed)."""

    kind: Literal["conv", "conv1d", "conv2d", "conv3d"]
    name: Name
    in_channels: Dim
    out_channels: Dim
    kernel_size: Kernel | Annotated[list[Kernel], Field(min_length=1, max_length=3)]
    groups: Dim = 1
    bias: StrictBool = False
    stride: Annotated[StrictInt, Field(gt=0, le=1024)] = 1
    padding: Annotated[StrictInt, Field(ge=0, le=1024)] = 0
    init: InitForm = "norm"

    @property
    def kernel(self) -> tuple[int, ...]:
        if isinstance(self.kernel_size, list):
            return tuple(self.kernel_size)
        n = int(self.kind[-2]) if self.kind != "conv" else 2
        return (self.kernel_size,) * n


@dataclass(frozen=True)
class ConvAttrs(LayerAttrs):
    in_channels: sympy.Expr
    out_channels: sympy.Expr
    groups: sympy.Expr
    kernel: tuple[int, ...]
    stride: int
    padding: int


class Conv(LayerKind):
    """Its layers' attributes: :class:`ConvAttrs`. The weight is stored ``(out, in/groups,
    *kernel)`` (layout ``conv``); flax stores it ``(*kernel, in/groups, out)``."""

    name = "conv"
    aliases = ("conv1d", "conv2d", "conv3d")
    schema = ConvLayer
    chain_role = "weight"
    activates = True
    spatial = True
    flax_leaves = {"weight": "kernel", "bias": "bias"}

    def expand(self, builder: Any, name: str, entry: ConvLayer, path: str) -> None:
        c_in = builder.dim(entry.in_channels, f"{path}.in_channels")
        c_out = builder.dim(entry.out_channels, f"{path}.out_channels")
        groups = builder.dim(entry.groups, f"{path}.groups")
        if c_in is None or c_out is None or groups is None:
            return
        per_group = sympy.cancel(c_in / groups)
        at_base = per_group.xreplace(builder.base)
        if not at_base.is_Integer or not sympy.cancel(c_out / groups).xreplace(builder.base).is_Integer:
            builder.problem(f"{path}.groups",
                            f"groups ({entry.groups}) must divide in_channels ({entry.in_channels}) "
                            f"and out_channels ({entry.out_channels})")
            return
        kernel = entry.kernel
        fan_in = per_group * prod(kernel)
        weight = builder.weight(name, fan_in, c_out, "dense", sympy.Integer(1), "out_in", path, None)
        builder.shape_tensor(weight, "conv", (c_out, per_group, *map(sympy.Integer, kernel)))
        builder.init_form(weight, entry.init, path)
        params = {"weight": weight}
        if entry.bias:
            params["bias"] = builder.vector(name, "bias", "bias", c_out, "zeros", path).name
        attrs = ConvAttrs(c_in, c_out, groups, kernel, entry.stride, entry.padding)
        builder.add_layer(name, self.name, path, params, attrs)

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["in_channels"]

    def width_out(self, layer: Any) -> Any:
        return layer.attrs["out_channels"]

    def dense(self, layer: Any) -> bool:
        return True

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from torch import nn

        a = layer.attrs
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(a["kernel"])]
        return cls(dims(a["in_channels"], layer.path), dims(a["out_channels"], layer.path),
                   a["kernel"], stride=a["stride"], padding=a["padding"],
                   groups=dims(a["groups"], layer.path), bias="bias" in layer.params, **factory)

    def flax_shape(self, tensor: Any) -> tuple[Any, ...]:
        if tensor.layout != "conv":
            return super().flax_shape(tensor)
        out, per_group, *kernel = tensor.dims
        return (*kernel, per_group, out)


KIND = Conv()
