"""Train a few steps at one width and measure what the paper's conditions are about.

At step ``t = 0`` (init) and after each of ``k`` steps, on the training batch itself:

- ``rms_h``: RMS of each weight layer's output ``h_l`` (its features, before the activation), at init;
- ``rms_dh``: RMS of ``h_l(t) - h_l(0)``; ``feature_change``: ``E_x ||dh_l(x)|| / ||h_l^0(x)||`` (Eq. 23);
- ``spectral_norm``: ``||W||_*`` of each tensor at init (the effective weight ``multiplier * W``);
  ``update_norm``: ``||W(t) - W(0)||_*``; ``relative_update`` (Fig. 2B), ``relative_frobenius``
  (Fig. 2D) and ``stable_rank`` ``||dW||_F^2 / ||dW||_*^2`` (Fig. 1);
- ``alignment``: Eq. 24 at the last weight layer, ``E_x ||W_L h'(x)|| / (||W_L||_* ||h'(x)||)``.

Features come from forward hooks on the training forward passes themselves: the forward of step
``t + 1`` sees the weights after ``t`` steps, so ``dh`` costs one extra forward pass in all.
Spectral norms come from Lanczos (:mod:`paramcalc.verify.linalg`), warm-started from the previous
step's top singular vector. Biases and gains are ``n x 1`` matrices: their spectral norm is their l2
norm. A step whose loss or features are not finite ends the run at that width: divergence is a
finding, recorded with its step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from paramcalc.derive import Derivation
from paramcalc.verify.data import Batch
from paramcalc.verify.linalg import spectral_norm
from paramcalc.verify.model import apply_parametrization, build

__all__ = ["Measurement", "RunSettings", "measure_width"]

Key = tuple[str, str, int]  # (quantity, subject, step)


@dataclass(frozen=True)
class RunSettings:
    """What to train: optimizer name, global learning rate, steps, which steps to measure.

    ``centered``: the loss sees ``f - f_0``, the output minus its value at init (Chizat et al. 2019),
    so that the first step's loss gradient is the targets' alone at every width (see
    :mod:`paramcalc.derive.calculus` for why that matters at finite width).
    """

    optimizer: str
    lr: float
    steps: int
    measure_steps: frozenset[int] | None = None  # None: every step
    adam_eps: float = 1e-8
    tol: float = 1e-3
    centered: bool = True

    def measured(self, step: int) -> bool:
        return self.measure_steps is None or step in self.measure_steps or step == self.steps


@dataclass
class Measurement:
    """One (width, seed) run: values keyed by ``(quantity, subject, step)``, losses per step."""

    widths: dict[str, int]
    seed: int
    values: dict[Key, float] = field(default_factory=dict)
    loss: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    seconds: float = 0.0
    measure_seconds: float = 0.0
    emitted: bool = False


class _Recorder:
    """Forward hooks that keep each weight layer's input and output of the latest forward pass."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.model_input: torch.Tensor | None = None
        self.handles = [model.register_forward_pre_hook(self._root)]
        for name in layers:
            module = model.get_submodule(name)
            self.handles.append(module.register_forward_hook(self._hook(name)))

    def _root(self, module: nn.Module, args: tuple) -> None:
        self.model_input = args[0] if args else None

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.inputs[name] = args[0].detach() if args else None  # type: ignore[assignment]
            self.outputs[name] = output.detach()

        return hook

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()
        self.model_input = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Features as rows ``(examples, width)``; sequence positions count as examples."""
    return x.reshape(-1, x.shape[-1]).float()


def measure_width(
    derivation: Derivation,
    widths: Mapping[str, int],
    seed: int,
    batch: Batch,
    settings: RunSettings,
    *,
    factory: Callable[[dict[str, int]], nn.Module] | None = None,
    device: torch.device | str = "cpu",
) -> Measurement:
    """Build, parametrize, train and measure the model at ``widths`` for one seed."""
    device = torch.device(device)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build(derivation, widths, factory=factory, device=device)
    run = apply_parametrization(derivation, model, widths, lr=settings.lr, optimizer=settings.optimizer,
                                adam_eps=settings.adam_eps)
    spec = derivation.spec
    layers = [layer.name for layer in spec.layers if layer.kind in ("linear", "embedding")]
    last = layers[-1]
    tensors = {t.name: t for t in spec.tensors}
    params = dict(model.named_parameters())
    mult = run.multipliers
    out = Measurement(dict(widths), seed, emitted=run.emitted)
    batch = batch.to(device)
    gen = torch.Generator().manual_seed(7919 * seed + 17)

    def effective(name: str) -> torch.Tensor:
        m = mult.get(name, 1.0)
        return params[name].detach() if m == 1.0 else params[name].detach() * m

    def matrix(name: str, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 2 else x.reshape(-1, 1)

    measure_time = 0.0
    t0 = time.perf_counter()
    w0 = {name: effective(name).clone() for name in tensors}
    buffers: dict[str, torch.Tensor] = {}
    w0_norm: dict[str, float] = {}
    w0_fro: dict[str, float] = {}
    right: dict[str, torch.Tensor] = {}
    for name, w in w0.items():
        fro = float(w.norm())
        w0_fro[name] = fro
        if fro == 0:
            continue  # zero init (biases): no init norm to judge
        w0_norm[name] = _norm(matrix(name, w), None, gen, settings.tol)[0]
        out.values[("spectral_norm", name, 0)] = w0_norm[name]
    measure_time += time.perf_counter() - t0

    recorder = _Recorder(model, layers)
    h0: dict[str, torch.Tensor] = {}
    last_right: torch.Tensor | None = None
    try:
        for step in range(settings.steps + 1):
            recorder.clear()
            output = model(batch.x)
            if settings.centered:
                if step == 0:
                    f0 = output.detach()
                output = output - f0
            loss = batch.loss_value(output)
            value = float(loss.detach())
            out.loss.append(value)
            if not math.isfinite(value):  # a non-finite feature makes the loss non-finite too
                out.diverged_at = step
                break
            t0 = time.perf_counter()
            if step == 0 or settings.measured(step):
                last_right = _features(out, recorder, layers, h0, step, last, effective, matrix,
                                       last_right, gen, settings.tol)
            measure_time += time.perf_counter() - t0
            if step == settings.steps:
                break
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            t0 = time.perf_counter()
            if settings.measured(step + 1):
                for name in tensors:
                    # One buffer per tensor, reused: a fresh 12 MB temporary per step costs as much
                    # in page faults as the norm it feeds.
                    if name not in buffers:
                        buffers[name] = torch.empty_like(w0[name])
                    dw = torch.sub(effective(name), w0[name], out=buffers[name])
                    fro = float(dw.norm())
                    if not math.isfinite(fro):
                        out.diverged_at = step + 1
                        break
                    start_vector = right.get(name)
                    if start_vector is None:
                        start_vector = _row_space_guess(recorder, tensors[name], dw)
                    spec_norm, right[name] = _norm(matrix(name, dw), start_vector, gen, settings.tol)
                    key = step + 1
                    out.values[("update_norm", name, key)] = spec_norm
                    if spec_norm > 0:
                        out.values[("stable_rank", name, key)] = (fro / spec_norm) ** 2
                    if name in w0_norm:
                        out.values[("relative_update", name, key)] = spec_norm / w0_norm[name]
                        out.values[("relative_frobenius", name, key)] = fro / w0_fro[name]
            measure_time += time.perf_counter() - t0
            if out.diverged_at is not None:
                break
    finally:
        recorder.remove()
    out.seconds = time.perf_counter() - start
    out.measure_seconds = measure_time
    return out


def _row_space_guess(recorder: _Recorder, tensor: object, dw: torch.Tensor) -> torch.Tensor | None:
    """A start vector for the first update's norm: the mean of the layer's inputs.

    An SGD update's rows lie in the span of the inputs it was computed from, and after a ReLU their
    mean dominates it; starting inside that span saves Lanczos most of its steps.
    """
    x = recorder.inputs.get(tensor.layer)  # type: ignore[attr-defined]
    if x is None or dw.dim() != 2 or tensor.layout != "out_in" or not torch.is_floating_point(x):  # type: ignore[attr-defined]
        return None
    rows = _rows(x)
    if rows.shape[1] != dw.shape[1]:
        return None
    guess = rows.mean(0)
    return guess if bool(guess.norm() > 0) else None


def _norm(
    a: torch.Tensor, start: torch.Tensor | None, gen: torch.Generator, tol: float
) -> tuple[float, torch.Tensor]:
    if a.shape[1] == 1 or a.shape[0] == 1:
        return float(a.norm()), a.reshape(-1)
    result = spectral_norm(a, start=start, generator=gen, tol=tol)
    return result.value, result.right


def _features(
    out: Measurement,
    recorder: _Recorder,
    layers: Sequence[str],
    h0: dict[str, torch.Tensor],
    step: int,
    last: str,
    effective: Callable[[str], torch.Tensor],
    matrix: Callable[[str, torch.Tensor], torch.Tensor],
    last_right: torch.Tensor | None,
    gen: torch.Generator,
    tol: float,
) -> torch.Tensor | None:
    missing = [name for name in layers if name not in recorder.outputs]
    if missing:
        from paramcalc.errors import Problem, SpecError

        raise SpecError([Problem(name, "this layer's module was not called in the model's forward pass, "
                                       "so its features cannot be measured") for name in missing],
                        source="model")
    for name in layers:
        h = _rows(recorder.outputs[name])
        if step == 0:
            h0[name] = h
            out.values[("rms_h", name, 0)] = float(h.pow(2).mean().sqrt())
            continue
        dh = h - h0[name]
        out.values[("rms_dh", name, step)] = float(dh.pow(2).mean().sqrt())
        base = h0[name].norm(dim=1)
        ok = base > 0
        if name != last and bool(ok.any()):  # Eq. 23: hidden features
            out.values[("feature_change", name, step)] = float((dh.norm(dim=1)[ok] / base[ok]).mean())
    # Eq. 24 at the last weight layer, with its current weight.
    x = recorder.inputs.get(last)
    weight_name = f"{last}.weight"
    if x is None or not torch.is_floating_point(x):
        return last_right
    try:
        w = effective(weight_name)
    except KeyError:
        return last_right
    w = matrix(weight_name, w)
    if w.shape[1] != x.shape[-1]:
        w = w.T  # an in_out layout
    x = _rows(x)
    w_norm, right = _norm(w, last_right, gen, tol)
    x_norm = x.norm(dim=1)
    ok = x_norm > 0
    if w_norm > 0 and bool(ok.any()):
        wx = (x[ok] @ w.T).norm(dim=1)
        out.values[("alignment", last, step)] = float((wx / (w_norm * x_norm[ok])).mean())
    return right
