"""The architecture spec: YAML or dict -> validated :class:`Spec` of parameter tensors."""

from paramcalc.spec.architecture import Spec, Tensor, Width
from paramcalc.spec.load import load_spec

__all__ = ["Spec", "Tensor", "Width", "load_spec"]
