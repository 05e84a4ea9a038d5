"""Layer kinds, one module each, looked up by name (see :mod:`paramcalc.kinds.base`).

>>> from paramcalc.kinds import get_kind
>>> get_kind("linear").chain_role
'weight'
"""

from __future__ import annotations

from paramcalc.errors import lookup
from paramcalc.kinds.base import LayerKind

__all__ = ["KINDS", "LayerKind", "get_kind", "register_kind", "unregister_kind"]

#: Kind name -> kind. Built-in kinds first; :func:`register_kind` adds more.
KINDS: dict[str, LayerKind] = {}


def register_kind(kind: LayerKind) -> LayerKind:
    """Add ``kind`` to the registry (replacing one of the same name) and rebuild the spec schema, so
    that specs may use it at once. Returns ``kind``."""
    KINDS[kind.name] = kind
    from paramcalc.spec import schema

    schema.rebuild()
    return kind


def unregister_kind(name: str) -> None:
    """Remove the kind registered under ``name`` (an extension's, e.g. after a test) and rebuild
    the spec schema."""
    KINDS.pop(name, None)
    from paramcalc.spec import schema

    schema.rebuild()


def get_kind(name: str) -> LayerKind:
    """The kind registered under ``name``, or a ValueError listing the known kinds."""
    return lookup(KINDS, name, "layer kind")


def _register_builtins() -> None:
    from paramcalc.kinds import attention, conv, embedding, linear, mlp, norm, parameter

    for module in (linear, embedding, norm, attention, mlp, conv, parameter):
        KINDS[module.KIND.name] = module.KIND


_register_builtins()
