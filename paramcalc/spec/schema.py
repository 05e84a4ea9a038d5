"""The architecture file as pydantic models: what a spec may say, before its expressions are read.

The minimal form (CONTRACT.md) is a list of ``linear`` layers; every layer kind brings its own model
(:mod:`paramcalc.kinds`), validated behind the ``kind`` discriminator, so the minimal form never
changes meaning. ``repeat`` blocks nest layers. The union of the layer models, ``RepeatBlock`` and
``SpecModel`` are built from the kind registry by :func:`rebuild`, once at import and again when a
kind is registered (:func:`paramcalc.kinds.register_kind`): always read them as module attributes
(``schema.SpecModel``), never bind them at import.
"""

# No ``from __future__ import annotations`` here: pydantic would evaluate every annotation from a
# string at import (about a sixth of this module's import time).
import keyword
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    create_model,
)

from paramcalc.kinds import KINDS
from paramcalc.kinds.attention import AttentionLayer
from paramcalc.kinds.embedding import EmbeddingLayer
from paramcalc.kinds.fields import Name, SpecEntry, show
from paramcalc.kinds.linear import LinearLayer
from paramcalc.kinds.mlp import MlpLayer
from paramcalc.kinds.norm import NormLayer

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
    "rebuild",
]

ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "identity")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The functions the expression language and the printed output use; any other identifier that is
# not a Python keyword is a width symbol (the paper's own n, n0, n_l included).
_RESERVED = {"sqrt", "Min", "Max"}


def _check_symbol(value: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not _IDENT.match(value):
        raise ValueError(f"a width symbol must be a Python identifier, got {str(value)[:60]!r}")
    if keyword.iskeyword(value):
        raise ValueError(f"{value!r} is a Python keyword; choose another width symbol (the emitted code "
                         "and the JSON's expressions use the symbol as a name)")
    if value in _RESERVED:
        raise ValueError(f"{value!r} is reserved (a function in expressions); choose another width symbol")
    return value


def _check_repeat(value: Any) -> Any:
    if isinstance(value, str) and _IDENT.match(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10_000:
        raise ValueError(
            f"expected a repeat count: an integer from 1 to 10000 or a width symbol, got {show(value)}"
        )
    return value


class ScalingWidth(SpecEntry):
    """A width that grows with the model; ``base`` is the width the hyperparameters were tuned at."""

    base: Annotated[StrictInt, Field(gt=0, le=10**12)]


def _check_widths(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of width symbols, got {show(value)}")
    return value


def _check_width_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a positive integer or {{base: N}}, got {show(value)}")
    if isinstance(value, int):
        if value <= 0 or value > 10**12:
            raise ValueError(f"a width must be a positive integer, got {value}")
        return value
    if isinstance(value, dict):
        return value
    raise ValueError(f"expected a positive integer or {{base: N}}, got {show(value)}")


WidthValue = Annotated[
    Annotated[StrictInt, Tag("fixed")] | Annotated[ScalingWidth, Tag("scaling")],
    Discriminator(lambda v: "scaling" if isinstance(v, (dict, ScalingWidth)) else "fixed"),
    BeforeValidator(_check_width_value),
]
Symbol = Annotated[str, AfterValidator(_check_symbol)]

#: ``kind:`` value -> its model (aliases included), in registry order, then ``repeat``.
LAYER_MODELS: dict[str, type[BaseModel]] = {}
#: ``kind:`` value -> the union tag (the kind's registry name).
_TAGS: dict[str, str] = {}
RepeatBlock: Any = None
SpecModel: Any = None


def _layer_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "repeat" if "repeat" in value else "linear")
        return _TAGS.get(kind) if isinstance(kind, str) else None
    if isinstance(value, BaseModel):
        return _TAGS.get(getattr(value, "kind", None))
    return None


def rebuild() -> None:
    """Build the layer union, ``RepeatBlock`` and ``SpecModel`` from the registered kinds."""
    global RepeatBlock, SpecModel
    models: dict[str, type[BaseModel]] = {}
    tags: dict[str, str] = {}
    for kind in KINDS.values():
        for value in (kind.name, *kind.aliases):
            models[value], tags[value] = kind.schema, kind.name
    repeat = create_model(
        "RepeatBlock",
        __base__=SpecEntry,
        __doc__="``repeat: N`` copies of ``layers`` named ``<name>.<i>.<layer>`` for i = 0..N-1; "
                "``residual: true`` makes each copy a residual branch of a chain, ``x + r * block(x)``.",
        kind=(Literal["repeat"], "repeat"),
        name=(Name, ...),
        repeat=(Annotated[int | str, BeforeValidator(_check_repeat)], ...),
        residual=(StrictBool, False),
        layers=(Annotated[list["Layer"], Field(min_length=1, max_length=10_000)], ...),  # noqa: F821
    )
    models["repeat"], tags["repeat"] = repeat, "repeat"
    members = tuple(Annotated[kind.schema, Tag(kind.name)] for kind in KINDS.values())
    layer = Annotated[
        Union[(*members, Annotated[repeat, Tag("repeat")])],  # noqa: UP007 - built from a tuple
        Discriminator(
            _layer_kind,
            custom_error_type="layer_kind",
            custom_error_message="expected a mapping whose kind is one of: " + ", ".join(models),
        ),
    ]
    repeat.model_rebuild(_types_namespace={"Layer": layer})
    spec = create_model(
        "SpecModel",
        __base__=SpecEntry,
        __doc__="The whole architecture file.",
        name=(Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")], ...),
        widths=(Annotated[dict[Symbol, WidthValue], BeforeValidator(_check_widths)], {}),
        activation=(Literal["relu", "gelu", "tanh", "silu", "identity"], "relu"),
        layers=(Annotated[list[layer], Field(min_length=1, max_length=100_000)], ...),
    )
    LAYER_MODELS.clear()
    LAYER_MODELS.update(models)
    _TAGS.clear()
    _TAGS.update(tags)
    RepeatBlock, SpecModel = repeat, spec


rebuild()
