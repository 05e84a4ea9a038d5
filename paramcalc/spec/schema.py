"""The architecture file as pydantic models: what a spec may say, before its expressions are read.

The minimal form (CONTRACT.md) is a list of ``linear`` layers; other layer kinds are added as
more models behind the ``kind`` discriminator, so the minimal form never changes meaning.
Expressions (``fan_in: 4*d``) stay strings here; :mod:`paramcalc.spec.architecture` parses them
against the declared widths.
"""

from __future__ import annotations

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
    "LinearLayer",
    "NormLayer",
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
    """A weight matrix ``fan_out x fan_in`` (torch ``nn.Linear`` layout), optionally with a bias."""

    kind: Literal["linear"] = "linear"
    name: Name
    fan_in: Dim
    fan_out: Dim
    input: Literal["dense", "sparse"] = "dense"
    bias: StrictBool = False
    gain: Const = 1
    bias_init: Literal["zeros", "normal"] = "zeros"


class NormLayer(_Model):
    """A normalisation layer's vector parameters: a gain (initialised to ones) and optional bias."""

    kind: Literal["norm"]
    name: Name
    dim: Dim
    bias: StrictBool = False


LAYER_MODELS: dict[str, type[_Model]] = {"linear": LinearLayer, "norm": NormLayer}


def _layer_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "linear")
        return kind if isinstance(kind, str) and kind in LAYER_MODELS else None
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    return None


Layer = Annotated[
    Annotated[LinearLayer, Tag("linear")] | Annotated[NormLayer, Tag("norm")],
    Discriminator(
        _layer_kind,
        custom_error_type="layer_kind",
        custom_error_message="expected a mapping whose kind is one of: " + ", ".join(LAYER_MODELS),
    ),
]


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
