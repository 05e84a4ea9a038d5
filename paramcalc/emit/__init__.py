"""Emitters: a derivation -> code or tables. Looked up by name; each consumes a Derivation."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from paramcalc import CallablePackage, registry
from paramcalc.errors import lookup

__all__ = ["EMITTERS", "emit"]

#: target -> (module, function), from :data:`paramcalc.registry.EMITTERS`. Imported on use, so
#: ``--emit json`` never loads jinja2.
EMITTERS = registry.EMITTERS


def get_emitter(target: str) -> Callable[..., str]:
    module, func = lookup(EMITTERS, target, "emit target")
    return getattr(importlib.import_module(module), func)


def emit(derivation: Any, target: str, widths: Mapping[str, int] | None = None) -> str:
    """Render ``derivation`` as ``target`` (json, markdown, ...). Where ``widths`` sets a depth (a
    scaling repeat count), the output lists that many blocks (:meth:`Derivation.at_depth`)."""
    if widths and getattr(derivation, "spec", None) is not None and derivation.spec.depth_blocks:
        derivation = derivation.at_depth(widths)
    return get_emitter(target)(derivation, widths)


sys.modules[__name__].__class__ = CallablePackage  # paramcalc.emit(...) after a submodule import
