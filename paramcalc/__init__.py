"""paramcalc: per-layer init scales, learning rates and multipliers for wide networks.

    >>> import paramcalc
    >>> spec = paramcalc.load_spec("examples/mlp.yaml")                  # doctest: +SKIP
    >>> d = paramcalc.derive(spec, parametrization="spectral", optimizer="sgd")  # doctest: +SKIP
    >>> d["fc1.weight"].init_std, d.evaluate({"d": 1024})              # doctest: +SKIP

The rules follow Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning".
"""

from paramcalc.derive import Derivation, ParamScale, abc_shift, derive
from paramcalc.errors import SpecError
from paramcalc.spec import Spec, Tensor, load_spec

__version__ = "0.1.0"

__all__ = [
    "Derivation",
    "ParamScale",
    "Spec",
    "SpecError",
    "Tensor",
    "__version__",
    "abc_shift",
    "derive",
    "load_spec",
]
