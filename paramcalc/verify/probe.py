"""A probe run before a sweep: the tensors that get no gradient at all.

Tensors without a gradient (:func:`zero_gradient`)
    Some tensors get no gradient by the model's structure, at every width: a key bias ``b_k`` adds
    ``q . b_k`` to every logit of a query alike, and softmax ignores a constant shift, so
    ``d loss / d b_k = sum_j (d loss / d logit_j) q = 0`` exactly. In float32 the sum is rounding,
    not zero, and Adam normalises even rounding to a step of size ``lr``: the measured "update" of
    such a tensor is noise of arbitrary slope (docs/verify.md). The probe computes one gradient at
    init in float64 at the smallest widths of the sweep: a tensor whose gradient norm
    is below :data:`ZERO_GRADIENT` times the largest tensor's at every probed width is structurally
    zero (rounding in float64 is ~1e-16 relative, a real gradient rarely below 1e-6), reported with
    the reason and not judged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.verify.data import Batch
from paramcalc.verify.model import apply_parametrization, build

__all__ = ["ZERO_GRADIENT", "zero_gradient", "zero_gradient_reason"]

#: A tensor whose float64 gradient norm is below this fraction of the largest one's has none.
ZERO_GRADIENT = 1e-9

Factory = Callable[[dict[str, int]], nn.Module]


def zero_gradient(
    derivation: Derivation,
    widths: Sequence[Mapping[str, int]],
    batch: Batch,
    *,
    centered: bool = True,
    factory: Factory | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Tensors without a gradient at init, at every one of ``widths``: name -> the largest relative
    gradient norm found (``||g_T|| / max_T' ||g_T'||``, float64; see the module docstring)."""
    device = torch.device(device)
    worst: dict[str, float] = {}
    for at in widths:
        torch.manual_seed(seed)
        model = build(derivation, at, factory=factory, device=device, dtype=torch.float64)
        run = apply_parametrization(derivation, model, at, lr=0.0)
        data = batch.to(device, torch.float64)
        out = model(data.x)
        loss = data.loss_value(out - out.detach() if centered else out)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = dict(model.named_parameters())
        norms = {}
        for name in derivation:
            grad = params[name].grad
            norms[name] = 0.0 if grad is None else float(grad.norm())
        top = max(norms.values(), default=0.0)
        if not top > 0:
            return {}
        for name, value in norms.items():
            worst[name] = max(worst.get(name, 0.0), value / top)
    return {name: value for name, value in worst.items() if value < ZERO_GRADIENT}


def zero_gradient_reason(derivation: Derivation, tensor: str) -> str:
    """Why ``tensor`` has no update to judge, in words (the same words for tensors alike)."""
    spec = derivation.spec
    why = "its gradient is identically zero"
    t = spec.tensor(tensor)
    layer = spec.layer(t.layer)
    if t.param == "bias" and layer.attrs.get("part") == "k":
        why = "softmax ignores q . b_k, which adds the same number to every logit of a query"
    return (f"no gradient: {why}. Its float64 gradient at init is below {ZERO_GRADIENT:.0e} of the "
            "largest tensor's (rounding), so its measured update is rounding noise (which Adam scales to "
            "size lr); reported, not judged")
