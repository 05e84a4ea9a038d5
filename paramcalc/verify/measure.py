"""Train a few steps at one width and measure what the paper's conditions are about.

At step ``t = 0`` (init) and after each of ``k`` steps, on the training batch itself:

- ``rms_h``: RMS of each weight layer's output ``h_l`` (its features, before the activation), at init;
- ``rms_dh``: RMS of ``h_l(t) - h_l(0)``; ``feature_change``: ``E_x ||dh_l(x)|| / ||h_l^0(x)||`` (Eq. 23);
- ``spectral_norm``: ``||W||_*`` of each tensor at init (the effective weight ``multiplier * W``);
  ``update_norm``: ``||W(t) - W(0)||_*``; ``relative_update`` (Fig. 2B), ``relative_frobenius``
  (Fig. 2D) and ``stable_rank`` ``||dW||_F^2 / ||dW||_*^2`` (Fig. 1);
- ``alignment``: Eq. 24 at the last weight layer, ``E_x ||W_L h'(x)|| / (||W_L||_* ||h'(x)||)``.

For structured architectures (``RunSettings.structured``; targets in
:func:`paramcalc.engine.calculus.target_exponents`) also:

- ``rms_h``, ``rms_dh`` of each norm's output, and ``rms_stream``, ``rms_dstream`` of its input
  (in a pre-norm transformer: the residual stream entering each block and the final norm);
- ``rms_logits``, ``rms_dlogits``: each attention layer's pre-softmax logits ``scale * q . k`` and
  their change, over the causal entries (:class:`paramcalc.models.Attention` with
  ``record_logits``; a factory's attention module needs ``record_logits`` and ``last_logits`` to be
  measured). A head holds few logits (``B T (T + 1) / 2``), and heads multiply with width: an RMS
  over all of them would average a width-dependent number of heavy-tailed samples (products of
  Gaussians; in deep blocks at init the tokens of a sequence are nearly parallel, so a head
  contributes about one independent logit), and the log of a small sample's RMS is biased low
  (Jensen), by less the more samples there are: a spurious positive slope (docs/verify.md). So
  heads are grouped in blocks of
  ``logit_group[layer]``, the number of heads at the smallest width of the sweep, the RMS is taken
  per group and the groups are averaged in log (a geometric mean): every width then estimates the
  same statistic from equal samples, more of them where there are more heads;
- ``spectral_norm``, ``update_norm`` of each tied use, keyed ``"<layer>.weight"``: the matrix
  ``mu * W`` the using layer computes with (``mu`` its forward multiplier), i.e. the owner's norms
  times ``mu`` over the owner's multiplier;
- ``rms_dwh``: the output's own-update term ``(W_L(t) - W_L(0)) h_{L-1}(t) + (b_L(t) - b_L(0))``,
  the first term of Eq. 9, RMS over outputs and examples.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.verify import observe
from paramcalc.verify.data import Batch
from paramcalc.verify.model import Parametrized, apply_parametrization, build
from paramcalc.verify.observe import Key, Recorder, as_matrix, rows

__all__ = ["ADAM_EPS", "Measurement", "RunSettings", "measure_width"]


#: Adam's epsilon in verify runs: negligible against any gradient entry, so that Adam is the
#: entrywise normaliser its update-size law describes (see :class:`RunSettings`).
ADAM_EPS = 1e-16


@dataclass(frozen=True)
class RunSettings:
    """What to train: optimizer name, global learning rate, steps, which steps to measure.

    ``centered``: the loss sees ``f - f_0``, the output minus its value at init (Chizat et al. 2019),
    so that the first step's loss gradient is the targets' alone at every width (see
    :mod:`paramcalc.engine.calculus` for why that matters at finite width).

    ``adam_eps``: Adam divides by ``sqrt(v) + eps``; the update-size law of
    :mod:`paramcalc.engine.optimizers` (``lr sign(G)`` on the first step, Sec. 3.3) holds while
    ``eps`` is negligible against ``|G|``. Gradients shrink with width (per entry like ``1/n`` in
    hidden layers under muP and spectral), so a fixed ``eps`` damps wide models more than narrow
    ones, an effect of ``eps``, not of the parametrization, which does not set it (Everett et al.
    2024 discuss how ``eps`` should scale; docs/verify.md has the measured effect of torch's
    default ``1e-8``). Hence :data:`ADAM_EPS`.
    """

    optimizer: str
    lr: float
    steps: int
    measure_steps: frozenset[int] | None = None  # None: every step
    adam_eps: float = ADAM_EPS
    #: Under Muon: AdamW's learning rate over Muon's (:func:`paramcalc.engine.factors.partner_lr_ratio`).
    adam_lr_ratio: float = 1.0
    #: Weight decay tuned at the base widths (times each tensor's factor); 0: none.
    weight_decay: float = 0.0
    #: Constructor options per optimizer name for the emitted ``make_optimizers``.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tol: float = 1e-3
    centered: bool = True
    #: Also measure what structured architectures add (norms, residual stream, attention logits,
    #: tied uses, the output's own-update term); see the module docstring.
    structured: bool = False
    #: Heads per group for the attention logits' RMS, per attention layer (default 1).
    logit_group: Mapping[str, int] = field(default_factory=dict)
    #: The model's floating-point type. A first step is small (that is the regime measured), and
    #: in float32 an update entry below about 6e-8 of its weight is lost to rounding: see
    #: ``Measurement.rounded``.
    dtype: torch.dtype = torch.float32

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
    #: Attention layers whose module had no ``scale`` to set (they keep their own logit scale).
    unscaled: list[str] = field(default_factory=list)
    #: Tensors whose first update was mostly lost to rounding: the fraction of the entries with a
    #: non-zero gradient that did not change at all (reported where above one half).
    rounded: dict[str, float] = field(default_factory=dict)


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
    model = build(derivation, widths, factory=factory, device=device, dtype=settings.dtype)
    run = apply_parametrization(derivation, model, widths, lr=settings.lr,
                                adam_lr=settings.lr * settings.adam_lr_ratio, adam_eps=settings.adam_eps,
                                weight_decay=settings.weight_decay, options=settings.options)
    out = Measurement(dict(widths), seed, emitted=run.emitted, unscaled=list(run.unscaled))
    batch = batch.to(device, settings.dtype)
    width_run = _WidthRun(derivation, run, settings, out)
    width_run.measure_init()
    width_run.train(batch)
    out.seconds = time.perf_counter() - start
    out.measure_seconds = width_run.measure_time
    return out


class _WidthRun:
    """One (width, seed) run in progress: the model's spec tensors as effective matrices
    ``multiplier * W``, their values at init, and what each step is measured against."""

    def __init__(
        self, derivation: Derivation, run: Parametrized, settings: RunSettings, out: Measurement
    ) -> None:
        spec = derivation.spec
        self.run, self.settings, self.out = run, settings, out
        self.layers = [layer.name for layer in spec.weight_layers]
        structured = settings.structured
        gains = [layer.name for layer in spec.layers if layer.definition.chain_role == "gain"]
        self.norms = gains if structured else []
        self.last = self.layers[-1]
        output = spec.layer(self.last)
        self.output_weight = output.params.get("weight")
        self.output_bias = output.params.get("bias")
        self.tensors = {t.name: t for t in spec.tensors}
        self.params = dict(run.model.named_parameters())
        self.gen = torch.Generator().manual_seed(7919 * out.seed + 17)
        # Tied uses measured as matrices of their own: (using layer, owner tensor, factor).
        self.tied = [(layer, ts.tensor, self.use_factor(layer, ts.tensor))
                     for layer, ts in derivation.tied.items() if structured and ts.tensor in self.tensors]
        self.logits = observe.logit_recorders(run.model, spec) if settings.structured else {}
        self.measure_time = 0.0
        self.w0: dict[str, torch.Tensor] = {}
        self.w0_norm: dict[str, float] = {}
        self.w0_fro: dict[str, float] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.right: dict[str, torch.Tensor] = {}
        self.h0: dict[str, torch.Tensor] = {}
        self.last_right: torch.Tensor | None = None

    def effective(self, name: str) -> torch.Tensor:
        m = self.run.multipliers.get(name, 1.0)
        return self.params[name].detach() if m == 1.0 else self.params[name].detach() * m

    def use_factor(self, layer: str, tensor: str) -> float:
        """``mu / m``: the matrix ``layer`` computes with, over the tensor's effective value."""
        if layer not in self.run.tied:
            return 1.0
        return self.run.tied[layer] / (self.run.multipliers.get(tensor, 1.0) or 1.0)

    def measure_init(self) -> None:
        """Keep every tensor's init and measure its spectral norm (and each tied use's)."""
        t0 = time.perf_counter()
        values = self.out.values
        self.w0 = {name: self.effective(name).clone() for name in self.tensors}
        for name, w in self.w0.items():
            fro = float(w.norm())
            self.w0_fro[name] = fro
            if fro == 0:
                continue  # zero init (biases): no init norm to judge
            self.w0_norm[name] = observe.norm(as_matrix(w), None, self.gen, self.settings.tol)[0]
            values[("spectral_norm", name, 0)] = self.w0_norm[name]
        for layer, tensor, factor in self.tied:
            if tensor in self.w0_norm:
                values[("spectral_norm", f"{layer}.weight", 0)] = abs(factor) * self.w0_norm[tensor]
        self.measure_time += time.perf_counter() - t0

    def train(self, batch: Batch) -> None:
        """Full-batch steps, measuring the features of every measured step and the updates after it.

        The forward pass of step ``t + 1`` sees the weights after ``t`` steps, so it gives ``dh``
        too. A loss or update that is not finite ends the run (``Measurement.diverged_at``).
        """
        recorder = Recorder(self.run.model, self.layers + self.norms)
        settings, out = self.settings, self.out
        try:
            for step in range(settings.steps + 1):
                recorder.clear()
                output = self.run.model(batch.x)
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
                if step == 0 or settings.measured(step):
                    self._timed(self.read_forward, recorder, step)
                if step == settings.steps:
                    break
                self.run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not self.run.step():
                    out.diverged_at = step + 1
                    break
                if settings.measured(step + 1):
                    self._timed(self.updates, recorder, step + 1)
                if out.diverged_at is not None:
                    break
        finally:
            recorder.remove()
            for module in self.logits.values():
                module.record_logits = False

    def _timed(self, measure: Callable[[Recorder, int], None], recorder: Recorder, step: int) -> None:
        t0 = time.perf_counter()
        measure(recorder, step)
        self.measure_time += time.perf_counter() - t0

    def read_forward(self, recorder: Recorder, step: int) -> None:
        """Everything read off the forward pass of ``step`` (the weights after ``step`` updates)."""
        values = self.out.values
        observe.features(values, recorder, self.layers, self.h0, step)
        if self.settings.structured:
            observe.stream_statistics(values, recorder, self.norms, self.h0, step)
            observe.logit_statistics(values, self.logits, self.settings.logit_group, self.h0, step)
            if step > 0:
                self._own_update(recorder, step)
        self._alignment(recorder, step)

    def updates(self, recorder: Recorder, key: int) -> None:
        """``||dW||_*`` of every tensor after ``key`` steps, and what follows from it."""
        values = self.out.values
        for name in self.tensors:
            # One buffer per tensor, reused: a fresh 12 MB temporary per step costs as much in page
            # faults as the norm it feeds.
            if name not in self.buffers:
                self.buffers[name] = torch.empty_like(self.w0[name])
            dw = torch.sub(self.effective(name), self.w0[name], out=self.buffers[name])
            if key == 1:
                lost = observe.rounding_loss(self.params[name].grad, dw)
                if lost > 0.5:
                    self.out.rounded[name] = lost
            fro = float(dw.norm())
            if not math.isfinite(fro):
                self.out.diverged_at = key
                break
            start_vector = self.right.get(name)
            if start_vector is None:
                start_vector = observe.row_space_guess(recorder, self.tensors[name], dw)
            spec_norm, self.right[name] = observe.norm(as_matrix(dw), start_vector, self.gen,
                                                       self.settings.tol)
            values[("update_norm", name, key)] = spec_norm
            if spec_norm > 0:
                values[("stable_rank", name, key)] = (fro / spec_norm) ** 2
            if name in self.w0_norm:
                values[("relative_update", name, key)] = spec_norm / self.w0_norm[name]
                values[("relative_frobenius", name, key)] = fro / self.w0_fro[name]
        for layer, tensor, factor in self.tied:
            if ("update_norm", tensor, key) in values:
                owner = values[("update_norm", tensor, key)]
                values[("update_norm", f"{layer}.weight", key)] = abs(factor) * owner

    def _alignment(self, recorder: Recorder, step: int) -> None:
        """Eq. 24 at the last weight layer, with its current weight (a tied use's ``mu W``)."""
        x = recorder.inputs.get(self.last)
        weight_name = self.output_weight or f"{self.last}.weight"
        if x is None or not torch.is_floating_point(x) or weight_name not in self.params:
            return
        w = as_matrix(self.effective(weight_name)) * self.use_factor(self.last, weight_name)
        if w.shape[1] != x.shape[-1]:
            w = w.T  # an in_out layout
        x = rows(x)
        w = w.to(x.dtype)
        w_norm, self.last_right = observe.norm(w, self.last_right, self.gen, self.settings.tol)
        x_norm = x.norm(dim=1)
        ok = x_norm > 0
        if w_norm > 0 and bool(ok.any()):
            wx = (x[ok] @ w.T).norm(dim=1)
            self.out.values[("alignment", self.last, step)] = float((wx / (w_norm * x_norm[ok])).mean())

    def _own_update(self, recorder: Recorder, step: int) -> None:
        """``rms_dwh``: RMS of the output's own-update term ``dW_L h + db_L`` (Eq. 9)."""
        x = recorder.inputs.get(self.last)
        weight, bias = self.output_weight, self.output_bias
        if x is None or weight is None or weight not in self.w0 or not torch.is_floating_point(x):
            return
        dw = (self.effective(weight) - self.w0[weight]) * self.use_factor(self.last, weight)
        if dw.dim() != 2:
            return
        x_rows = rows(x)
        dw = dw.to(x_rows.dtype)
        if dw.shape[1] == x_rows.shape[1]:
            y = x_rows @ dw.T
        elif dw.shape[0] == x_rows.shape[1]:
            y = x_rows @ dw  # an in_out layout
        else:
            return
        if bias is not None and bias in self.w0:
            y = y + (self.effective(bias) - self.w0[bias]).to(x_rows.dtype)
        self.out.values[("rms_dwh", self.last, step)] = float(y.pow(2).mean().sqrt())
