"""paramcalc: per-layer init scales, learning rates and multipliers for wide networks.

    >>> import paramcalc
    >>> spec = paramcalc.load_spec("examples/mlp.yaml")                  # doctest: +SKIP
    >>> d = paramcalc.derive(spec, parametrization="spectral", optimizer="sgd")  # doctest: +SKIP
    >>> d["fc1.weight"].init_std, d.evaluate({"d": 1024})              # doctest: +SKIP

The rules follow Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning".

The public names below are loaded on first use (PEP 562): ``import paramcalc`` costs nothing, and
the command line decides when sympy and pydantic are imported (``paramcalc --help`` never needs
them; see :func:`paramcalc.cli.main` for why that matters to a cold ``paramcalc derive``).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from paramcalc.errors import SpecError, UsageError, UserError  # noqa: F401 - public names

__version__ = "0.1.0"

#: The public names loaded on first use: name -> the module that defines it. The one list.
_LAZY = {
    "Derivation": "paramcalc.engine",
    "ParamScale": "paramcalc.engine",
    "abc_shift": "paramcalc.engine",
    "derive": "paramcalc.engine",
    "Spec": "paramcalc.spec",
    "Tensor": "paramcalc.spec",
    "load_spec": "paramcalc.spec",
    "emit": "paramcalc.emit",
    "build_model": "paramcalc.models",
    "verify": "paramcalc.verify",
    "VerifyConfig": "paramcalc.verify",
    "infer_spec": "paramcalc.infer",
    "audit": "paramcalc.auditing",
    "widths_at": "paramcalc.widths",
}


class CallablePackage(types.ModuleType):
    """A subpackage that is also called as its main function (``paramcalc.emit(d, "torch")``,
    ``paramcalc.verify(spec)``): importing a submodule such as ``paramcalc.emit.docs`` sets the
    package as the attribute ``paramcalc.emit``, which would otherwise shadow the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


#: Submodules read as attributes: ``paramcalc.torch.apply(...)``.
_SUBMODULES = {"torch": "paramcalc.torch"}

__all__ = sorted(["SpecError", "UsageError", "UserError", "__version__", *_LAZY, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    if name not in _LAZY:
        raise AttributeError(f"module 'paramcalc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
