"""What a verify run reads off a model: forward hooks, spectral norms and the per-step statistics.

These are the pieces :mod:`paramcalc.verify.measure` (and the probes of
:mod:`paramcalc.verify.calibrate`) are made of: a :class:`Recorder` that keeps each watched layer's
input and output of the latest forward pass; features as rows ``(examples, width)``; the spectral
norm of a tensor as a matrix (biases and gains are ``n x 1``: their l2 norm); Eq. 23's relative
feature change; the attention logits over the causal entries, averaged per group of heads
(:func:`grouped_rms`); and the check that a first update was not lost to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Spec
from paramcalc.verify.linalg import spectral_norm

__all__ = ["Recorder", "as_matrix", "causal_logits", "features", "grouped_rms", "logit_recorders",
           "logit_statistics", "norm", "rounding_loss", "row_space_guess", "rows", "stream_statistics"]

Key = tuple[str, str, int]  # (quantity, subject, step)


class Recorder:
    """Forward hooks that keep each weight layer's input and output of the latest forward pass."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.model_input: torch.Tensor | None = None
        self.handles = [model.register_forward_pre_hook(self._root)]
        for name in layers:
            parent, _, leaf = name.rpartition(".")
            holder = model.get_submodule(parent)
            if isinstance(holder, nn.MultiheadAttention) and leaf in ("in_proj", "out_proj"):
                self.handles.append(holder.register_forward_hook(self._packed(name, leaf), with_kwargs=True))
                continue
            module = model.get_submodule(name)
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _root(self, module: nn.Module, args: tuple) -> None:
        self.model_input = args[0] if args else None

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.inputs[name] = args[0].detach() if args else None  # type: ignore[assignment]
            self.outputs[name] = output.detach()

        return hook

    def _packed(self, name: str, leaf: str) -> Callable[..., None]:
        """The features of the projections of an ``nn.MultiheadAttention`` (a packed attention),
        whose forward calls neither: ``in_proj``'s are its weight and bias applied to the query
        input, with its forward multipliers (``paramcalc_multipliers``, set by the emitted
        ``apply_multipliers``; the logit scale is not part of them); ``out_proj``'s are the
        module's output (its input, the attention's mix of values, is not seen)."""
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: Any) -> None:
            if leaf == "out_proj":
                self.inputs[name] = None  # type: ignore[assignment]
                self.outputs[name] = (output[0] if isinstance(output, tuple) else output).detach()
                return
            x = (args[0] if args else kwargs["query"]).detach()
            (weight, bias), _ = getattr(module, "paramcalc_multipliers", ((1, None), None))
            b = module.in_proj_bias
            with torch.no_grad():
                out = torch.nn.functional.linear(x, weight * module.in_proj_weight,
                                                 None if b is None else (1 if bias is None else bias) * b)
            self.inputs[name], self.outputs[name] = x, out

        return hook

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()
        self.model_input = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def rows(x: torch.Tensor) -> torch.Tensor:
    """Features as rows ``(examples, width)``; sequence positions count as examples. In float32 at
    least (float64 stays float64)."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.dtype == torch.float64 else x.float()


def as_matrix(x: torch.Tensor) -> torch.Tensor:
    """A tensor as the matrix its spectral norm is taken of: vectors are ``n x 1``; a convolution's
    ``(out, in/groups, *kernel)`` kernel is the ``(out, in/groups * prod(kernel))`` matrix that maps
    a patch to an output pixel (the conv kind's fan-in; raw ``(1, T, d)`` tables are rows)."""
    if x.dim() == 2:
        return x
    return x.reshape(-1, 1) if x.dim() < 2 else x.reshape(x.shape[0], -1)


def norm(
    a: torch.Tensor, start: torch.Tensor | None, gen: torch.Generator, tol: float
) -> tuple[float, torch.Tensor]:
    """``||a||_*`` and its top right singular vector (Lanczos; a vector's l2 norm)."""
    if a.shape[1] == 1 or a.shape[0] == 1:
        return float(a.norm()), a.reshape(-1)
    result = spectral_norm(a, start=start, generator=gen, tol=tol)
    return result.value, result.right


def rounding_loss(grad: torch.Tensor | None, dw: torch.Tensor) -> float:
    """The fraction of the entries with a gradient that did not move in the first step: above one
    half, the update was below the weights' floating-point resolution and what is measured is rounding.

    Counted without masks: verify's optimizers (plain SGD, Adam; no weight decay, no momentum
    carried in) move an entry in the first step only where its gradient is non-zero, so the entries
    that should have moved and did not are the gradient's non-zeros less the update's. Two counting
    passes instead of five passes and two temporary masks, about an eighth of verify at batch 32.
    """
    if grad is None:
        return 0.0
    count = int(torch.count_nonzero(grad))
    if count == 0:
        return 0.0
    return max(0, count - int(torch.count_nonzero(dw))) / count


def row_space_guess(recorder: Recorder, tensor: Any, dw: torch.Tensor) -> torch.Tensor | None:
    """A start vector for the first update's norm: the mean of the layer's inputs.

    An SGD update's rows lie in the span of the inputs it was computed from, and after a ReLU their
    mean dominates it; starting inside that span saves Lanczos most of its steps.
    """
    x = recorder.inputs.get(tensor.layer)
    if x is None or dw.dim() != 2 or tensor.layout != "out_in" or not torch.is_floating_point(x):
        return None
    x_rows = rows(x)
    if x_rows.shape[1] != dw.shape[1]:
        return None
    guess = x_rows.mean(0)
    return guess if bool(guess.norm() > 0) else None


def features(
    values: dict[Key, float], recorder: Recorder, layers: Sequence[str], h0: dict[str, torch.Tensor],
    step: int,
) -> None:
    """RMS of each weight layer's output and of its change; Eq. 23 for the hidden ones."""
    missing = [name for name in layers if name not in recorder.outputs]
    if missing:
        raise SpecError([Problem(name, "this layer's module was not called in the model's forward pass, "
                                       "so its features cannot be measured") for name in missing],
                        source="model")
    last = layers[-1]
    for name in layers:
        h = rows(recorder.outputs[name])
        if step == 0:
            h0[name] = h
            values[("rms_h", name, 0)] = float(h.pow(2).mean().sqrt())
            continue
        dh = h - h0[name]
        values[("rms_dh", name, step)] = float(dh.pow(2).mean().sqrt())
        base = h0[name].norm(dim=1)
        ok = base > 0
        if name != last and bool(ok.any()):  # Eq. 23: hidden features
            values[("feature_change", name, step)] = float((dh.norm(dim=1)[ok] / base[ok]).mean())


def logit_recorders(model: nn.Module, spec: Spec) -> dict[str, nn.Module]:
    """Attention modules that can record their logits (``record_logits``), switched on."""
    found = {}
    for layer in spec.layers:
        if layer.kind != "attention":
            continue
        try:
            module = model.get_submodule(layer.name)
        except AttributeError:
            continue
        if hasattr(module, "record_logits"):
            module.record_logits = True
            found[layer.name] = module
    return found


def causal_logits(module: nn.Module) -> torch.Tensor | None:
    """The recorded logits ``(batch, heads, seq, seq)`` over the entries softmax sees:
    ``(batch, heads, causal entries)``."""
    logits = getattr(module, "last_logits", None)
    if logits is None or logits.dim() != 4:
        return None
    t = logits.shape[-1]
    mask = torch.ones(t, t, dtype=torch.bool, device=logits.device)
    if getattr(module, "causal", False):
        mask = mask.tril()
    logits = logits[..., mask]
    return logits if logits.dtype == torch.float64 else logits.float()


def grouped_rms(logits: torch.Tensor, group: int) -> float:
    """Geometric mean over groups of ``group`` heads of the RMS within each group.

    ``logits`` is ``(batch, heads, entries)``; heads beyond a whole number of groups are left out.
    See :mod:`paramcalc.verify.measure` for why the groups have a fixed size.
    """
    heads = logits.shape[1]
    group = max(1, min(group, heads))
    groups = heads // group
    blocks = logits[:, : groups * group].transpose(0, 1).reshape(groups, -1)
    rms = blocks.pow(2).mean(1).sqrt()
    if not bool((rms > 0).all()):
        return float(rms.pow(2).mean().sqrt())
    return float(rms.log().mean().exp())


def stream_statistics(
    values: dict[Key, float], recorder: Recorder, norms: Sequence[str], h0: dict[str, torch.Tensor],
    step: int,
) -> None:
    """RMS of each norm's output and of the residual stream at its input, and of their changes."""
    for name in norms:
        h, x = recorder.outputs.get(name), recorder.inputs.get(name)
        for key, value, init, change in ((name, h, "rms_h", "rms_dh"),
                                         (f"{name}:stream", x, "rms_stream", "rms_dstream")):
            if value is None or not torch.is_floating_point(value):
                continue
            value_rows = rows(value)
            if step == 0:
                h0[key] = value_rows
                values[(init, name, 0)] = float(value_rows.pow(2).mean().sqrt())
            else:
                values[(change, name, step)] = float((value_rows - h0[key]).pow(2).mean().sqrt())


def logit_statistics(
    values: dict[Key, float], logits: Mapping[str, nn.Module], logit_group: Mapping[str, int],
    h0: dict[str, torch.Tensor], step: int,
) -> None:
    """Grouped RMS of each attention layer's recorded logits at init and of their change."""
    for name, module in logits.items():
        current = causal_logits(module)
        if current is None:
            continue
        key = f"{name}:logits"
        group = logit_group.get(name, 1)
        if step == 0:
            h0[key] = current
            values[("rms_logits", name, 0)] = grouped_rms(current, group)
        else:
            values[("rms_dlogits", name, step)] = grouped_rms(current - h0[key], group)
