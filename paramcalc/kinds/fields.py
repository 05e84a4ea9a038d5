"""Field types shared by every layer kind's schema: names, dimensions, constants.

Expressions (``fan_in: 4*d``) stay strings here; :mod:`paramcalc.spec.architecture` parses them
against the declared widths.
"""

# No ``from __future__ import annotations`` here: pydantic would evaluate every annotation from a
# string at import.
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StrictStr

__all__ = ["Const", "Dim", "InitForm", "Name", "SpecEntry", "show"]

_SEGMENT = r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+)"
#: A layer name: a submodule path of identifiers and integers (``blocks.0.attn``; ``0`` and ``2`` for
#: the layers of an ``nn.Sequential``).
_NAME = re.compile(rf"{_SEGMENT}(\.{_SEGMENT})*\Z")


def show(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_name(value: str) -> str:
    if len(value) > 200:
        raise ValueError(f"a layer name of {len(value)} characters (at most 200), got {value[:40]!r}...")
    if not _NAME.match(value):
        raise ValueError(
            "expected a Python identifier or an integer, or such names joined by dots "
            f"(a submodule path such as blocks.0.attn.q), got {value[:60]!r}"
        )
    return value


def _check_dim(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            "expected a positive integer or an arithmetic expression over width symbols "
            f"such as 4*d, got {show(value)}"
        )
    return value


def _check_const(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a positive number or an expression such as sqrt(2), got {show(value)}")
    return value


Name = Annotated[StrictStr, AfterValidator(_check_name)]
Dim = Annotated[int | str, BeforeValidator(_check_dim)]
Const = Annotated[int | float | str, BeforeValidator(_check_const)]
#: A weight layer's ``init:``: ``norm`` (the rule as it is) or ``features`` (the spectral rule
#: without its shrink, for a fixed input dimension: the paper's App. A;
#: :mod:`paramcalc.engine.rules.spectral`).
InitForm = Literal["norm", "features"]


class SpecEntry(BaseModel):
    """Base of every model in a spec: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
