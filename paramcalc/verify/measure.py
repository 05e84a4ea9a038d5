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
  (Jensen), by less the more samples there are: a spurious positive slope (up to +0.37, mean
  +0.11 over the 12 blocks of ``examples/gpt.yaml`` at 2 tokens). So heads are grouped in blocks of
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.spec import Spec
from paramcalc.verify.data import Batch
from paramcalc.verify.linalg import spectral_norm
from paramcalc.verify.model import apply_parametrization, build

__all__ = ["ADAM_EPS", "Measurement", "RunSettings", "grouped_rms", "measure_width"]

Key = tuple[str, str, int]  # (quantity, subject, step)


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
    2024 discuss how ``eps`` should scale). Measured on ``examples/gpt.yaml`` under spectral with
    Adam, whose tied readout computes with ``0.02 W / d_model``: with torch's default ``1e-8``, 63%
    of the entries of a deep block's query gradient lie below ``eps`` at ``d_model = 512`` (none at
    64), and the query and key updates came out ``n^-0.4`` too small. Hence :data:`ADAM_EPS`.
    """

    optimizer: str
    lr: float
    steps: int
    measure_steps: frozenset[int] | None = None  # None: every step
    adam_eps: float = ADAM_EPS
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
    """Features as rows ``(examples, width)``; sequence positions count as examples. In float32 at
    least (float64 stays float64)."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.dtype == torch.float64 else x.float()


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
    run = apply_parametrization(derivation, model, widths, lr=settings.lr, optimizer=settings.optimizer,
                                adam_eps=settings.adam_eps)
    spec = derivation.spec
    layers = [layer.name for layer in spec.weight_layers]
    norms = [layer.name for layer in spec.layers if layer.kind == "norm"] if settings.structured else []
    last = layers[-1]
    tensors = {t.name: t for t in spec.tensors}
    params = dict(model.named_parameters())
    mult = run.multipliers
    out = Measurement(dict(widths), seed, emitted=run.emitted, unscaled=list(run.unscaled))
    batch = batch.to(device, settings.dtype)
    gen = torch.Generator().manual_seed(7919 * seed + 17)

    def effective(name: str) -> torch.Tensor:
        m = mult.get(name, 1.0)
        return params[name].detach() if m == 1.0 else params[name].detach() * m

    def matrix(name: str, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 2 else x.reshape(-1, 1)

    def use_factor(layer: str, tensor: str) -> float:
        """``mu / m``: the matrix ``layer`` computes with, over the tensor's effective value."""
        if layer not in run.tied:
            return 1.0
        return run.tied[layer] / (mult.get(tensor, 1.0) or 1.0)

    # Tied uses measured as matrices of their own: (using layer, owner tensor, factor).
    tied = [(layer, ts.tensor, use_factor(layer, ts.tensor)) for layer, ts in derivation.tied.items()
            if settings.structured and ts.tensor in tensors]
    logits = _logit_recorders(model, spec) if settings.structured else {}

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
    for layer, tensor, factor in tied:
        if tensor in w0_norm:
            out.values[("spectral_norm", f"{layer}.weight", 0)] = abs(factor) * w0_norm[tensor]
    measure_time += time.perf_counter() - t0

    recorder = _Recorder(model, layers + norms)
    readout = _Readout(spec, last, effective, w0, use_factor) if settings.structured else None
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
                _features(out, recorder, layers, h0, step)
                if settings.structured:
                    _structured(out, recorder, norms, logits, h0, step, readout, settings.logit_group)
                last_right = _alignment(out, recorder, last, step, effective, matrix, use_factor, spec,
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
                    if step == 0:
                        _rounding(out, name, params[name].grad, dw)
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
                for layer, tensor, factor in tied:
                    key = step + 1
                    if ("update_norm", tensor, key) in out.values:
                        out.values[("update_norm", f"{layer}.weight", key)] = (
                            abs(factor) * out.values[("update_norm", tensor, key)])
            measure_time += time.perf_counter() - t0
            if out.diverged_at is not None:
                break
    finally:
        recorder.remove()
        for module in logits.values():
            module.record_logits = False
    out.seconds = time.perf_counter() - start
    out.measure_seconds = measure_time
    return out


def _rounding(out: Measurement, name: str, grad: torch.Tensor | None, dw: torch.Tensor) -> None:
    """Record ``name`` when most entries with a gradient did not move in the first step: their update
    was below the weights' floating-point resolution, so what is measured is rounding.

    Counted without masks: verify's optimizers (plain SGD, Adam; no weight decay, no momentum
    carried in) move an entry in the first step only where its gradient is non-zero, so the entries
    that should have moved and did not are the gradient's non-zeros less the update's. Two counting
    passes instead of five passes and two temporary masks, about an eighth of verify at batch 32.
    """
    if grad is None:
        return
    count = int(torch.count_nonzero(grad))
    if count == 0:
        return
    lost = max(0, count - int(torch.count_nonzero(dw))) / count
    if lost > 0.5:
        out.rounded[name] = lost


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
    out: Measurement, recorder: _Recorder, layers: Sequence[str], h0: dict[str, torch.Tensor], step: int,
) -> None:
    """RMS of each weight layer's output and of its change; Eq. 23 for the hidden ones."""
    missing = [name for name in layers if name not in recorder.outputs]
    if missing:
        from paramcalc.errors import Problem, SpecError

        raise SpecError([Problem(name, "this layer's module was not called in the model's forward pass, "
                                       "so its features cannot be measured") for name in missing],
                        source="model")
    last = layers[-1]
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


def _alignment(
    out: Measurement,
    recorder: _Recorder,
    last: str,
    step: int,
    effective: Callable[[str], torch.Tensor],
    matrix: Callable[[str, torch.Tensor], torch.Tensor],
    use_factor: Callable[[str, str], float],
    spec: Spec,
    last_right: torch.Tensor | None,
    gen: torch.Generator,
    tol: float,
) -> torch.Tensor | None:
    """Eq. 24 at the last weight layer, with its current weight (a tied use's ``mu W``)."""
    x = recorder.inputs.get(last)
    weight_name = spec.layer(last).params.get("weight", f"{last}.weight")
    if x is None or not torch.is_floating_point(x):
        return last_right
    try:
        w = effective(weight_name)
    except KeyError:
        return last_right
    w = matrix(weight_name, w) * use_factor(last, weight_name)
    if w.shape[1] != x.shape[-1]:
        w = w.T  # an in_out layout
    x = _rows(x)
    w = w.to(x.dtype)
    w_norm, right = _norm(w, last_right, gen, tol)
    x_norm = x.norm(dim=1)
    ok = x_norm > 0
    if w_norm > 0 and bool(ok.any()):
        wx = (x[ok] @ w.T).norm(dim=1)
        out.values[("alignment", last, step)] = float((wx / (w_norm * x_norm[ok])).mean())
    return right


class _Readout:
    """The output layer's own-update term ``dW_L h + db_L`` (Eq. 9), for ``rms_dwh``."""

    def __init__(
        self, spec: Spec, last: str, effective: Callable[[str], torch.Tensor], w0: Mapping[str, torch.Tensor],
        use_factor: Callable[[str, str], float],
    ) -> None:
        layer = spec.layer(last)
        self.last = last
        self.weight = layer.params.get("weight")
        self.bias = layer.params.get("bias")
        self.effective = effective
        self.w0 = w0
        self.factor = use_factor(last, self.weight) if self.weight else 1.0

    def term(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.weight is None or self.weight not in self.w0 or not torch.is_floating_point(x):
            return None
        dw = (self.effective(self.weight) - self.w0[self.weight]) * self.factor
        if dw.dim() != 2:
            return None
        rows = _rows(x)
        dw = dw.to(rows.dtype)
        if dw.shape[1] == rows.shape[1]:
            y = rows @ dw.T
        elif dw.shape[0] == rows.shape[1]:
            y = rows @ dw  # an in_out layout
        else:
            return None
        if self.bias is not None and self.bias in self.w0:
            y = y + (self.effective(self.bias) - self.w0[self.bias]).to(rows.dtype)
        return y


def _logit_recorders(model: nn.Module, spec: Spec) -> dict[str, nn.Module]:
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


def _causal_logits(module: nn.Module) -> torch.Tensor | None:
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
    See the module docstring for why the groups have a fixed size.
    """
    heads = logits.shape[1]
    group = max(1, min(group, heads))
    groups = heads // group
    blocks = logits[:, : groups * group].transpose(0, 1).reshape(groups, -1)
    rms = blocks.pow(2).mean(1).sqrt()
    if not bool((rms > 0).all()):
        return float(rms.pow(2).mean().sqrt())
    return float(rms.log().mean().exp())


def _structured(
    out: Measurement,
    recorder: _Recorder,
    norms: Sequence[str],
    logits: Mapping[str, nn.Module],
    h0: dict[str, torch.Tensor],
    step: int,
    readout: _Readout | None,
    logit_group: Mapping[str, int],
) -> None:
    """Norm outputs, the residual stream at their inputs, attention logits, the output's own update."""
    for name in norms:
        h, x = recorder.outputs.get(name), recorder.inputs.get(name)
        for key, value, init, change in ((name, h, "rms_h", "rms_dh"),
                                         (f"{name}:stream", x, "rms_stream", "rms_dstream")):
            if value is None or not torch.is_floating_point(value):
                continue
            rows = _rows(value)
            if step == 0:
                h0[key] = rows
                out.values[(init, name, 0)] = float(rows.pow(2).mean().sqrt())
            else:
                out.values[(change, name, step)] = float((rows - h0[key]).pow(2).mean().sqrt())
    for name, module in logits.items():
        current = _causal_logits(module)
        if current is None:
            continue
        key = f"{name}:logits"
        group = logit_group.get(name, 1)
        if step == 0:
            h0[key] = current
            out.values[("rms_logits", name, 0)] = grouped_rms(current, group)
        else:
            out.values[("rms_dlogits", name, step)] = grouped_rms(current - h0[key], group)
    if readout is not None and step > 0:
        x = recorder.inputs.get(readout.last)
        term = None if x is None else readout.term(x)
        if term is not None:
            out.values[("rms_dwh", readout.last, step)] = float(term.pow(2).mean().sqrt())
