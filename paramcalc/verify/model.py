"""Models for the verifier, and the parametrization applied to them.

A model comes from the spec (:func:`paramcalc.models.build_model`, chains and transformers) or from
a user factory ``module:function`` called with the width assignment (``{"d": 1024, "n_in": 3072,
...}``) that must return a ``torch.nn.Module`` whose submodule paths are the spec's layer names.

The parametrization is applied through the emitted PyTorch code, and only through it
(``paramcalc.emit.emit(d, "torch")``, executed in a fresh namespace: ``init_parameters``,
``apply_multipliers``, ``param_groups``; the multipliers the measurements divide out come from its
``scales`` and ``layer_multipliers``), so a verify run is also an end-to-end test of emission: every
number it trains with is one the user's generated file would use.

Attention-logit scales are part of the parametrization too (``Derivation.constants``: ``1/d_head``
under spectral, ``sqrt(d_head_base)/d_head`` under muP, TP5 Definition 4.1): each attention layer's
module gets the emitted ``attention_scales(widths)`` as its ``scale`` attribute, which
:class:`paramcalc.models.Attention` multiplies its logits by, or as ``scaling`` (Hugging Face's
attention classes), as :func:`paramcalc.torch.install_attention_scales` does for users. A
factory's attention module with neither keeps its own scale, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.errors import FactoryError, Problem
from paramcalc.factory import call_factory, load_factory

__all__ = ["Parametrized", "apply_parametrization", "available_memory", "build", "does_not_fit",
           "emitted_namespace", "load_factory", "memory_needed"]


def build(
    derivation: Derivation,
    widths: Mapping[str, int],
    *,
    factory: Callable[[dict[str, int]], nn.Module] | None,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The model at ``widths``, in ``dtype`` if given: from ``factory`` if given, else built from the
    spec (directly in ``dtype``: no float32 copy first, which for a 50257-token embedding is
    hundreds of MB at the larger widths)."""
    spec = derivation.spec
    if factory is None:
        from paramcalc.models import build_model

        # Every parameter of a spec-built model is a spec tensor, which the parametrization
        # initialises: skip torch's default init (as costly as a training step at width 1024).
        # Tied weights stay tied through to_empty (build_model's models re-share them).
        return build_model(spec, dict(widths), device="meta", dtype=dtype).to_empty(device=device)
    else:
        label = getattr(factory, "__qualname__", "the --model factory")
        model = call_factory(factory, widths, label)
        _check_names(model, derivation, widths)
        model.register_forward_hook(_output_tensor)
    return model.to(device) if dtype is None else model.to(device=device, dtype=dtype)


def _check_names(model: nn.Module, derivation: Derivation, widths: Mapping[str, int]) -> None:
    from paramcalc.models import parameter_shapes

    shapes = parameter_shapes(derivation.spec, widths)
    params = dict(model.named_parameters())
    problems = []
    for name, shape in shapes.items():
        p = params.get(name)
        if p is None:
            problems.append(Problem(name, "the factory's model has no parameter of this name (submodule "
                                          "paths must be the spec's layer names)"))
        elif tuple(p.shape) != shape:
            problems.append(Problem(name, f"has shape {tuple(p.shape)}, the spec says {shape}"))
    if problems:
        raise FactoryError(problems, source="--model")


def _output_tensor(module: nn.Module, args: Any, output: Any) -> torch.Tensor:
    """Forward hook on a factory's model: its output as the tensor verify trains on (a tensor, the
    first item of a tuple, or ``.logits`` of a Hugging Face ``ModelOutput``)."""
    from paramcalc.infer.inputs import output_tensor

    return output_tensor(output)


#: The last derivation whose emitted code was executed, with the code's namespace: verify applies
#: one derivation at every width and seed. Held, not keyed by ``id()``: a freed derivation's id
#: can be the next one's, which once gave a new derivation an earlier one's code.
_EMITTED: list[tuple[Derivation, dict[str, Any]]] = []


def emitted_namespace(derivation: Derivation) -> dict[str, Any]:
    """The namespace of the emitted PyTorch module of ``derivation``, executed once and kept."""
    from paramcalc.emit import emit

    if _EMITTED and _EMITTED[0][0] is derivation:
        return _EMITTED[0][1]
    code = emit(derivation, "torch")
    namespace: dict[str, Any] = {"__name__": f"paramcalc_emitted_{derivation.spec.name}"}
    exec(compile(code, f"<emitted torch code for {derivation.spec.name}>", "exec"), namespace)  # noqa: S102
    _EMITTED[:] = [(derivation, namespace)]
    return namespace


@dataclass
class Parametrized:
    """A model with its parametrization applied: the optimizer, and each tensor's multiplier."""

    model: nn.Module
    #: The emitted ``make_optimizers``' result: step() and zero_grad() act on every optimizer.
    optimizer: Any
    multipliers: dict[str, float]
    emitted: bool
    #: Forward multiplier of each tied use (``Derivation.tied``), keyed by the using layer: it
    #: computes with ``tied[layer] * W`` of the owner's stored tensor.
    tied: dict[str, float] = field(default_factory=dict)
    #: Attention layers whose module has no ``scale`` attribute to set (a factory's own attention).
    unscaled: list[str] = field(default_factory=list)

    def step(self) -> bool:
        """One optimizer step; False where ``lr * factor`` is beyond the dtype's range (torch refuses
        to convert it): the run diverges there, a finding and not a crash."""
        try:
            self.optimizer.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            return False
        return True


def apply_parametrization(
    derivation: Derivation,
    model: nn.Module,
    widths: Mapping[str, int],
    *,
    lr: float,
    adam_lr: float | None = None,
    adam_eps: float = 1e-8,
    weight_decay: float = 0.0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Parametrized:
    """Initialise ``model``, make its multipliers act, and build the optimizers for ``lr`` (under Muon,
    AdamW's for ``adam_lr``), all through the emitted code (``make_optimizers``: per-tensor lr, eps
    and weight-decay factors); the multipliers and attention scales are the emitted code's numbers."""
    widths = dict(widths)
    namespace = emitted_namespace(derivation)
    try:
        namespace["init_parameters"](model, widths)
        namespace["apply_multipliers"](model, widths)
        opt = namespace["make_optimizers"](model, lr, adam_lr, widths, weight_decay=weight_decay,
                                           eps=adam_eps, options=options)
    except ValueError as exc:  # the emitted code names what does not match the spec
        raise FactoryError([Problem("model", str(exc))], source=derivation.spec.source) from None
    multipliers = {name: s["multiplier"] for name, s in namespace["scales"](widths).items()}
    uses = namespace["layer_multipliers"](widths)
    tied = {layer: uses[layer][0] for layer in namespace["TIED"]}
    from paramcalc.torch import install_attention_scales, install_residual_scales

    unscaled = install_attention_scales(model, derivation, namespace["attention_scales"](widths))
    residuals = namespace["residual_scales"](widths)
    if install_residual_scales(model, residuals):
        raise FactoryError([Problem("model", (
            "the depth scales, and paramcalc cannot see this model's residual connections: its blocks "
            f"must multiply their branches by {residuals}"))], source=derivation.spec.source)
    return Parametrized(model, opt, multipliers, True, tied, unscaled)


def memory_needed(
    shapes: Mapping[str, tuple[int, ...]], *, batch: int, widths_sum: int, optimizer: str,
    dtype_bytes: int = 4,
) -> int:
    """Bytes a verify run at one width needs, roughly: parameters, gradients, optimizer state,
    initial copies and the recorded features."""
    params = sum(math.prod(s) for s in shapes.values())
    from paramcalc.engine import get_optimizer

    copies = 3 + get_optimizer(optimizer).state_tensors  # weights, grads, W0 and the optimizer's state
    return dtype_bytes * (copies * params + 8 * batch * widths_sum)


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def does_not_fit(
    derivation: Derivation, at: Mapping[str, int], batch: int, optimizer: str, device: torch.device,
) -> str | None:
    """Why a run at ``at`` would not fit in ``device``'s free memory, or ``None`` when it fits."""
    from paramcalc.models import parameter_shapes

    shapes = parameter_shapes(derivation.spec, at)
    widths_sum = sum(s[0] for s in shapes.values())
    need = memory_needed(shapes, batch=batch, widths_sum=widths_sum, optimizer=optimizer)
    free = available_memory(device)
    if free is not None and need > free:
        return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device.type}"
    return None
