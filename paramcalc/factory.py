"""A user's model factory, named on the command line as ``pkg.mod:function``.

The function takes the width assignment (``{"d_model": 1024, "n_heads": 16, ...}``) and returns
the ``torch.nn.Module`` built as its user builds it. Its module may also hold ``WIDTHS``, a dict
from the function's name to the widths ``infer_spec`` takes (``{"d_model": {"base": 256},
"vocab": 1000}``), so that ``paramcalc infer pkg.mod:function`` needs no ``--widths``.

Whatever goes wrong with it (it cannot be imported, it raises, it returns something that is not a
module) is one :class:`~paramcalc.FactoryError` paragraph naming the factory, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from paramcalc.errors import FactoryError, Problem

__all__ = ["call_factory", "declared_widths", "load_factory"]


def load_factory(text: str, option: str = "--model") -> Callable[[dict[str, int]], Any]:
    """Import ``module:function`` (the current directory is importable, as with ``python -m``)."""
    module_name, sep, func_name = text.partition(":")
    if not sep or not module_name or not func_name:
        raise FactoryError([Problem(option, f"expected module:function, got {text!r}")],
                           source="command line")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's input
        raise FactoryError([Problem(option, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")],
                           source="command line") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise FactoryError([Problem(option, f"{module_name!r} has no callable {func_name!r}")],
                           source="command line")
    return func


def declared_widths(text: str) -> dict[str, Any] | None:
    """``WIDTHS[function]`` of the factory ``module:function``'s module, if it declares one."""
    module_name, _, func_name = text.partition(":")
    table = getattr(sys.modules.get(module_name), "WIDTHS", None)
    widths = table.get(func_name) if isinstance(table, Mapping) else None
    return dict(widths) if isinstance(widths, Mapping) else None


def call_factory(factory: Callable[[dict[str, int]], Any], widths: Mapping[str, int], label: str) -> Any:
    """``factory(widths)``, which must be a ``torch.nn.Module``; anything else is a FactoryError."""
    from torch import nn

    try:
        model = factory(dict(widths))
    except Exception as exc:  # noqa: BLE001 - the factory is user code; name what failed
        raise FactoryError([Problem("factory", f"{label}({dict(widths)}) raised {type(exc).__name__}: "
                                               f"{exc}")], source=label) from None
    if not isinstance(model, nn.Module):
        raise FactoryError([Problem("factory", f"{label}(...) returned {type(model).__name__}, expected a "
                                               "torch.nn.Module")], source=label)
    return model
