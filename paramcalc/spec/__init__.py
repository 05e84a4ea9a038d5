"""The architecture spec: YAML or dict -> validated :class:`Spec` of parameter tensors."""

from paramcalc.spec.architecture import Layer, Spec, Tensor, TiedUse, Width
from paramcalc.spec.load import load_spec

__all__ = ["Layer", "Spec", "Tensor", "TiedUse", "Width", "load_spec"]
