"""``parameter``: a raw tensor the model adds or concatenates to its features, with no module
around it: a ViT's class token ``(1, 1, d)``, a learned position table ``(1, seq, d)``.

Its input is a constant (App. D: ``d_in = 1``, as a bias): each row of width ``fan_out`` (the last
dimension) is a learned vector that enters the stream as it is. So it takes a bias's role and
scalings (``input`` where ``fan_out`` scales), but is initialised from a normal distribution by
default (``init: normal``), as class tokens and position tables are. It has no forward
multiplier to hook: a rule that gives it one other than 1 is refused at emission, with the fix.
"""

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import sympy
from pydantic import Field

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Dim, Name, SpecEntry

__all__ = ["KIND", "Parameter", "ParameterAttrs", "ParameterLayer"]


class ParameterLayer(SpecEntry):
    """A raw tensor of ``shape`` (its last dimension is the feature width) whose input is a
    constant. ``name`` is the parameter's own path in the model (``vit.embeddings.cls_token``)."""

    kind: Literal["parameter"]
    name: Name
    shape: Annotated[list[Dim], Field(min_length=1, max_length=8)]
    init: Literal["normal", "zeros", "ones"] = "normal"


@dataclass(frozen=True)
class ParameterAttrs(LayerAttrs):
    shape: tuple[sympy.Expr, ...]
    fan_out: sympy.Expr


class Parameter(LayerKind):
    """Its layers' attributes: :class:`ParameterAttrs`. The layer's one tensor has the layer's
    own name."""

    name = "parameter"
    schema = ParameterLayer
    hooks_forward = False

    def expand(self, builder: Any, name: str, entry: ParameterLayer, path: str) -> None:
        dims = [builder.dim(raw, f"{path}.shape[{i}]") for i, raw in enumerate(entry.shape)]
        if any(d is None for d in dims):
            return
        module, _, param = name.rpartition(".")
        tensor = builder.vector(module, param, "bias", dims[-1], entry.init, path, owner=name)
        builder.shape_tensor(tensor.name, "param", tuple(dims))
        builder.add_layer(name, self.name, path, {param: tensor.name},
                          ParameterAttrs(tuple(dims), dims[-1]))

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["fan_out"]

    def flax_leaf(self, layer: Any, param: str) -> tuple[str, str]:
        module, _, leaf = layer.name.rpartition(".")
        return module, leaf


KIND = Parameter()
