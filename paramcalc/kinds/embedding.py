"""``embedding``: a lookup table ``vocab x dim`` (torch ``nn.Embedding``), a weight whose input is
one-hot (``d_in = 1``, App. E). It reads token ids, so it comes first in a chain; in a transformer
the first embedding is the token table and the next ones are position tables."""

from dataclasses import dataclass
from typing import Any, Literal

import sympy

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Const, Dim, Name, SpecEntry

__all__ = ["KIND", "Embedding", "EmbeddingAttrs", "EmbeddingLayer"]


class EmbeddingLayer(SpecEntry):
    """A lookup table ``vocab x dim`` (torch ``nn.Embedding``): a weight whose input is one-hot."""

    kind: Literal["embedding"]
    name: Name
    vocab: Dim
    dim: Dim
    gain: Const = 1
    tie: Name | None = None


@dataclass(frozen=True)
class EmbeddingAttrs(LayerAttrs):
    """An embedding's attributes: ``fan_in`` is the vocabulary, ``fan_out`` the dim."""

    fan_in: sympy.Expr
    fan_out: sympy.Expr
    input: Literal["sparse"] = "sparse"
    tie: str | None = None


class Embedding(LayerKind):
    """Its layers' attributes: :class:`EmbeddingAttrs`. The weight is stored ``(vocab, dim)``:
    layout ``in_out``."""

    name = "embedding"
    schema = EmbeddingLayer
    chain_role = "weight"
    reads_ids = True
    flax_leaves = {"weight": "embedding"}

    def expand(self, builder: Any, name: str, entry: EmbeddingLayer, path: str) -> None:
        vocab = builder.dim(entry.vocab, f"{path}.vocab")
        dim = builder.dim(entry.dim, f"{path}.dim")
        gain = builder.const(entry.gain, f"{path}.gain")
        if vocab is None or dim is None or gain is None:
            return
        weight = builder.weight(name, vocab, dim, "sparse", gain, "in_out", path, entry.tie)
        builder.add_layer(name, self.name, path, {"weight": weight},
                          EmbeddingAttrs(vocab, dim, "sparse", entry.tie))

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["fan_in"]

    def width_out(self, layer: Any) -> Any:
        return layer.attrs["fan_out"]

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from torch import nn

        return nn.Embedding(dims(layer.attrs["fan_in"], layer.path), dims(layer.attrs["fan_out"], layer.path),
                            **factory)


KIND = Embedding()
