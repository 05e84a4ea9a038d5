"""``mlp``: a transformer MLP, a residual branch whose projections are linear layers of their own:
``fc: d_model -> d_ff``, ``proj: d_ff -> d_model`` (``gated: true`` adds ``gate: d_model -> d_ff``)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import sympy
from pydantic import Field, StrictBool, StrictInt

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Dim, Name, SpecEntry

__all__ = ["KIND", "Mlp", "MlpAttrs", "MlpLayer", "MlpNames"]


class MlpNames(SpecEntry):
    fc: Name = "fc"
    gate: Name = "gate"
    proj: Name = "proj"


class MlpLayer(SpecEntry):
    """A transformer MLP: ``fc: d_model -> d_ff``, ``proj: d_ff -> d_model`` (``gated: true`` adds
    ``gate: d_model -> d_ff``). ``d_ff`` defaults to ``expansion * d_model``."""

    kind: Literal["mlp"]
    name: Name
    d_model: Dim
    d_ff: Dim | None = None
    expansion: Annotated[StrictInt, Field(gt=0, le=1024)] = 4
    bias: StrictBool = False
    gated: StrictBool = False
    names: MlpNames = MlpNames()


@dataclass(frozen=True)
class MlpAttrs(LayerAttrs):
    d_model: sympy.Expr
    d_ff: sympy.Expr
    gated: bool
    projections: Mapping[str, str]


class Mlp(LayerKind):
    """Its layers' attributes: :class:`MlpAttrs`."""

    name = "mlp"
    schema = MlpLayer
    residual_branch = True

    def expand(self, builder: Any, name: str, entry: MlpLayer, path: str) -> None:
        d_model = builder.dim(entry.d_model, f"{path}.d_model")
        d_ff_raw = entry.d_ff if entry.d_ff is not None else f"{entry.expansion}*({entry.d_model})"
        d_ff = builder.dim(d_ff_raw, f"{path}.d_ff")
        if d_model is None or d_ff is None:
            return
        parts = {"fc": (entry.d_model, d_ff_raw)}
        if entry.gated:
            parts["gate"] = (entry.d_model, d_ff_raw)
        parts["proj"] = (d_ff_raw, entry.d_model)
        subs = builder.projections(name, parts, entry.names, entry.bias, path)
        builder.add_layer(name, self.name, path, {}, MlpAttrs(d_model, d_ff, entry.gated, subs))

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["d_model"]

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from paramcalc.modules import Mlp as MlpModule

        names = {k: v.rsplit(".", 1)[1] for k, v in layer.attrs["projections"].items()}
        return MlpModule(names, bool(layer.attrs["gated"]), activation)


KIND = Mlp()
