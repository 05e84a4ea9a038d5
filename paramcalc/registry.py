"""The names paramcalc knows: one registry each for parametrizations, optimizers, emit targets and
table formats, as name -> the module that implements it.

This is the only list of those names. It imports nothing heavy, so the command line builds its
choices from it without loading sympy (``paramcalc --help`` stays fast); the engine, the emitters and
the tables load each object from its module on first use (:func:`paramcalc.engine.get_rule`,
:func:`paramcalc.engine.get_optimizer`, :func:`paramcalc.emit.get_emitter`,
:func:`paramcalc.emit.tables.get_format`). Display titles live on the objects themselves. An
extension registers its object with :func:`paramcalc.engine.register_rule` or
:func:`paramcalc.engine.register_optimizer`, which adds its name here too.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EMITTERS", "OPTIMIZERS", "PARAMETRIZATIONS", "TABLE_FORMATS", "add", "load", "remove"]

#: Parametrization -> module defining ``RULE``.
PARAMETRIZATIONS: dict[str, str] = {
    "spectral": "paramcalc.engine.rules.spectral",
    "mup": "paramcalc.engine.rules.mup",
    "ntp": "paramcalc.engine.rules.ntp",
    "sp": "paramcalc.engine.rules.sp",
}

#: Optimizer -> module defining ``OPTIMIZER``.
OPTIMIZERS: dict[str, str] = {
    "sgd": "paramcalc.engine.optimizers.sgd",
    "adam": "paramcalc.engine.optimizers.adam",
    "adamw": "paramcalc.engine.optimizers.adamw",
    "lion": "paramcalc.engine.optimizers.lion",
    "muon": "paramcalc.engine.optimizers.muon",
}

#: Emit target -> (module, function). ``--emit`` also offers ``table``, the terminal table.
EMITTERS: dict[str, tuple[str, str]] = {
    "json": ("paramcalc.emit.json", "emit_json"),
    "markdown": ("paramcalc.emit.markdown", "emit_markdown"),
    "latex": ("paramcalc.emit.latex", "emit_latex"),
    "html": ("paramcalc.emit.html", "emit_html"),
    "torch": ("paramcalc.emit.torch", "emit_torch"),
    "jax": ("paramcalc.emit.jax", "emit_jax"),
}

#: Table format -> (module, TableFormat attribute).
TABLE_FORMATS: dict[str, tuple[str, str]] = {
    "markdown": ("paramcalc.emit.markdown", "MARKDOWN"),
    "latex": ("paramcalc.emit.latex", "LATEX"),
    "html": ("paramcalc.emit.html", "HTML"),
}


def load(names: dict[str, str], attribute: str) -> dict[str, Any]:
    """``{name: module.<attribute>}`` for a registry of modules, in its order."""
    return {name: getattr(importlib.import_module(module), attribute) for name, module in names.items()}


def add(objects: dict[str, Any], names: dict[str, str], obj: Any) -> Any:
    """Register ``obj`` (an extension's) under ``obj.name`` in a loaded registry and its names."""
    objects[obj.name] = obj
    names[obj.name] = type(obj).__module__
    return obj


def remove(objects: dict[str, Any], names: dict[str, str], name: str) -> None:
    objects.pop(name, None)
    names.pop(name, None)
