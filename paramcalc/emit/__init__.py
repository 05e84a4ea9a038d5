"""Emitters: a derivation -> code or tables. Looked up by name; each consumes a Derivation."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from paramcalc.errors import lookup

__all__ = ["EMITTERS", "emit"]

# target -> (module, function). Imported on use, so `--emit json` never loads jinja2.
EMITTERS: dict[str, tuple[str, str]] = {
    "json": ("paramcalc.emit.json", "emit_json"),
    "markdown": ("paramcalc.emit.markdown", "emit_markdown"),
    "latex": ("paramcalc.emit.latex", "emit_latex"),
    "html": ("paramcalc.emit.html", "emit_html"),
    "torch": ("paramcalc.emit.torch", "emit_torch"),
    "jax": ("paramcalc.emit.jax", "emit_jax"),
}


def get_emitter(target: str) -> Callable[..., str]:
    module, func = lookup(EMITTERS, target, "emit target")
    return getattr(importlib.import_module(module), func)


def emit(derivation: Any, target: str, widths: Mapping[str, int] | None = None) -> str:
    """Render ``derivation`` as ``target`` (json, markdown, ...)."""
    return get_emitter(target)(derivation, widths)
