"""The architecture file as pydantic models: what a spec may say, before its expressions are read.

The minimal form (CONTRACT.md) is a list of ``linear`` layers; other layer kinds are added as
more models behind the ``kind`` discriminator, so the minimal form never changes meaning.
Expressions (``fan_in: 4*d``) stay strings here; :mod:`paramcalc.spec.architecture` parses them
against the declared widths.
"""

# No ``from __future__ import annotations`` here: pydantic would evaluate every annotation from a
# string at import (about a sixth of this module's import time).
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
)

__all__ = [
    "ACTIVATIONS",
    "LAYER_MODELS",
    "AttentionLayer",
    "EmbeddingLayer",
    "LinearLayer",
    "MlpLayer",
    "NormLayer",
    "RepeatBlock",
    "ScalingWidth",
    "SpecModel",
]

ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "identity")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*\Z")
_RESERVED = {"sqrt", "Min", "Max", "n"}


def _check_name(value: str) -> str:
    if len(value) > 200 or not _NAME.match(value):
        raise ValueError(
            "expected a Python identifier, or identifiers and integers joined by dots "
            f"(a submodule path such as blocks.0.attn.q), got {value[:60]!r}"
        )
    return value


def _check_symbol(value: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _IDENT.match(value):
        raise ValueError(f"a width symbol must be a Python identifier, got {str(value)[:60]!r}")
    if value in _RESERVED:
        raise ValueError(f"{value!r} is reserved; choose another width symbol")
    return value


def _check_dim(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            "expected a positive integer or an arithmetic expression over width symbols "
            f"such as 4*d, got {_show(value)}"
        )
    return value


def _check_const(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a positive number or an expression such as sqrt(2), got {_show(value)}")
    return value


def _check_repeat(value: Any) -> Any:
    if isinstance(value, str) and _IDENT.match(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10_000:
        raise ValueError(
            f"expected a repeat count: an integer from 1 to 10000 or a fixed width symbol, got {_show(value)}"
        )
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Name = Annotated[StrictStr, AfterValidator(_check_name)]
Dim = Annotated[int | str, BeforeValidator(_check_dim)]
Const = Annotated[int | float | str, BeforeValidator(_check_const)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScalingWidth(_Model):
    """A width that grows with the model; ``base`` is the width the hyperparameters were tuned at."""

    base: Annotated[StrictInt, Field(gt=0, le=10**12)]


class LinearLayer(_Model):
    """A weight matrix ``fan_out x fan_in`` (torch ``nn.Linear`` layout), optionally with a bias.

    ``tie: other`` makes this layer use the weight of layer ``other`` (same stored shape) instead
    of a tensor of its own, e.g. a readout tied to the token embedding.
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


class EmbeddingLayer(_Model):
    """A lookup table ``vocab x dim`` (torch ``nn.Embedding``): a weight whose input is one-hot."""

    kind: Literal["embedding"]
    name: Name
    vocab: Dim
    dim: Dim
    gain: Const = 1
    tie: Name | None = None


class NormLayer(_Model):
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


class AttentionNames(_Model):
    """Submodule names of the projections inside an attention block."""

    q: Name = "q"
    k: Name = "k"
    v: Name = "v"
    qkv: Name = "qkv"
    o: Name = "o"


class AttentionLayer(_Model):
    """Multi-head self-attention: q, k, v projections ``d_model -> n_heads*d_head`` and an output
    projection back (``fused: true``: one ``qkv`` projection of width ``3*n_heads*d_head``).

    The derivation also gives the attention-logit scale to pass to attention.
    """

    kind: Literal["attention"]
    name: Name
    d_model: Dim
    n_heads: Dim
    d_head: Dim
    bias: StrictBool = False
    fused: StrictBool = False
    names: AttentionNames = AttentionNames()


class MlpNames(_Model):
    fc: Name = "fc"
    gate: Name = "gate"
    proj: Name = "proj"


class MlpLayer(_Model):
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


class RepeatBlock(_Model):
    """``repeat: N`` copies of ``layers`` named ``<name>.<i>.<layer>`` for i = 0..N-1."""

    kind: Literal["repeat"] = "repeat"
    name: Name
    repeat: Annotated[int | str, BeforeValidator(_check_repeat)]
    layers: Annotated[list["Layer"], Field(min_length=1, max_length=10_000)]


LAYER_MODELS: dict[str, type[_Model]] = {
    "linear": LinearLayer,
    "embedding": EmbeddingLayer,
    "norm": NormLayer,
    "layernorm": NormLayer,
    "rmsnorm": NormLayer,
    "attention": AttentionLayer,
    "mlp": MlpLayer,
    "repeat": RepeatBlock,
}
_TAGS = {"norm": "norm", "layernorm": "norm", "rmsnorm": "norm"}


def _layer_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "repeat" if "repeat" in value else "linear")
        if isinstance(kind, str) and kind in LAYER_MODELS:
            return _TAGS.get(kind, kind)
        return None
    if isinstance(value, BaseModel):
        kind = getattr(value, "kind", None)
        return _TAGS.get(kind, kind)
    return None


Layer = Annotated[
    Annotated[LinearLayer, Tag("linear")]
    | Annotated[EmbeddingLayer, Tag("embedding")]
    | Annotated[NormLayer, Tag("norm")]
    | Annotated[AttentionLayer, Tag("attention")]
    | Annotated[MlpLayer, Tag("mlp")]
    | Annotated[RepeatBlock, Tag("repeat")],
    Discriminator(
        _layer_kind,
        custom_error_type="layer_kind",
        custom_error_message="expected a mapping whose kind is one of: " + ", ".join(LAYER_MODELS),
    ),
]
RepeatBlock.model_rebuild()


def _check_widths(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of width symbols, got {_show(value)}")
    return value


def _check_width_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a positive integer or {{base: N}}, got {_show(value)}")
    if isinstance(value, int):
        if value <= 0 or value > 10**12:
            raise ValueError(f"a width must be a positive integer, got {value}")
        return value
    if isinstance(value, dict):
        return value
    raise ValueError(f"expected a positive integer or {{base: N}}, got {_show(value)}")


WidthValue = Annotated[
    Annotated[StrictInt, Tag("fixed")] | Annotated[ScalingWidth, Tag("scaling")],
    Discriminator(lambda v: "scaling" if isinstance(v, (dict, ScalingWidth)) else "fixed"),
    BeforeValidator(_check_width_value),
]
Symbol = Annotated[str, AfterValidator(_check_symbol)]


class SpecModel(_Model):
    """The whole architecture file."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]
    widths: Annotated[dict[Symbol, WidthValue], BeforeValidator(_check_widths)] = {}
    activation: Literal["relu", "gelu", "tanh", "silu", "identity"] = "relu"
    layers: Annotated[list[Layer], Field(min_length=1, max_length=100_000)]
