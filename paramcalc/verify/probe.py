"""Probes run before a sweep: the learning rate where no calculus gives one, and tensors without a gradient.

Learning-rate calibration (:func:`calibrate_lr`)
    For a chain the verifier calibrates ``lr`` from the calculus (the learning rate whose predicted
    first step changes the output by RMS 0.1 at the spec's base widths). Where there is no calculus
    (a transformer, or a factory's model that is not a chain) it measures instead: one step of the
    real optimizer at the smallest width of the sweep, from the same init and batch as the runs
    that follow, and the change of every hidden feature (each weight layer's output but the last,
    each norm's output and input: the residual stream). It chooses ``lr`` so that the feature that
    moves most, relative to its own RMS, moves by ``target`` = 10%: the first step is then small
    everywhere (the first-step regime the theory and the judge's slopes are about) and large enough
    to measure. The output is left out on purpose: a muP or spectral readout starts near zero by
    design (a readout tied to an embedding under spectral computes with ``W / d_model``), so its
    change says little about how far the network moved; calibrating ``examples/gpt.yaml`` under
    spectral with Adam on an output change of 0.1 asked for lr 0.47, a first step that moved the
    token embeddings by 20 times their init. The change is linear in ``lr`` to first order: for
    SGD because ``dW = -lr G``; for Adam because its first step is ``-lr G / (|G| + eps)``, ``lr``
    times a tensor that does not depend on ``lr``. So ``lr <- lr * target / change`` hits the target
    up to second-order terms, and a further probe at that ``lr`` corrects those (at most
    :data:`PROBES` probes, until within 10%). A global constant cannot move an exponent; it only
    decides how far the first steps are from the linear regime.

Tensors without a gradient (:func:`zero_gradient`)
    Some tensors get no gradient by the model's structure, at every width: a key bias ``b_k`` adds
    ``q . b_k`` to every logit of a query alike, and softmax ignores a constant shift, so
    ``d loss / d b_k = sum_j (d loss / d logit_j) q = 0`` exactly. In float32 the sum is rounding,
    not zero, and Adam normalises even rounding to a step of size ``lr``: the measured "update" of
    such a tensor is noise of arbitrary slope (``||dW||_*`` of the key biases of
    ``examples/gpt.yaml`` under muP with Adam came out ``n^-0.4 .. -0.7``, where Condition 1 asks
    ``n^1/2``). The probe computes
    one gradient at init in float64 at the smallest widths of the sweep: a tensor whose gradient norm
    is below :data:`ZERO_GRADIENT` times the largest tensor's at every probed width is structurally
    zero (rounding in float64 is ~1e-16 relative, a real gradient rarely below 1e-6), reported with
    the reason and not judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.verify.data import Batch
from paramcalc.verify.measure import ADAM_EPS, _Recorder
from paramcalc.verify.model import apply_parametrization, build

__all__ = ["PROBES", "ZERO_GRADIENT", "Calibration", "calibrate_lr", "zero_gradient", "zero_gradient_reason"]

#: Most probe steps :func:`calibrate_lr` takes.
PROBES = 4
#: A tensor whose float64 gradient norm is below this fraction of the largest one's has none.
ZERO_GRADIENT = 1e-9

Factory = Callable[[dict[str, int]], nn.Module]


@dataclass
class Calibration:
    """What :func:`calibrate_lr` found: the learning rate, where, and each probe
    ``(lr, largest relative change of a hidden feature, output RMS change)``."""

    lr: float
    widths: dict[str, int]
    target: float
    probes: list[tuple[float, float, float]] = field(default_factory=list)
    #: The hidden feature that moved most at the chosen learning rate.
    feature: str = ""

    @property
    def change(self) -> float:
        """The largest relative change of a hidden feature at the chosen learning rate."""
        return next((c for lr, c, _ in reversed(self.probes) if lr == self.lr), math.nan)

    @property
    def output_change(self) -> float:
        """The output's RMS change at the chosen learning rate."""
        return next((o for lr, _, o in reversed(self.probes) if lr == self.lr), math.nan)

    def describe(self, lead: str) -> str:
        return (f"no calculus for this architecture, so lr is calibrated by {len(self.probes)} probe steps "
                f"at {lead} = {self.widths[lead]}: the first step moves the hidden feature that moves most "
                f"({self.feature}) by {self.change:.3g} of its RMS (target {self.target:g}), the output "
                f"by RMS {self.output_change:.3g}")


def _hidden(derivation: Derivation) -> tuple[list[str], list[str]]:
    """Weight layers but the last, and norms: the hidden features the probe watches."""
    spec = derivation.spec
    weights = [layer.name for layer in spec.weight_layers]
    return weights[:-1], [layer.name for layer in spec.layers if layer.kind == "norm"]


def _first_step(
    derivation: Derivation, widths: Mapping[str, int], batches: Mapping[int, Batch], lr: float,
    optimizer: str, *, centered: bool, factory: Factory | None, device: torch.device, adam_eps: float,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, str, float]:
    """One step at ``lr`` per seed: geometric means over seeds of the largest relative change of a
    hidden feature (and which one, most often) and of the output's RMS change."""
    weights, norms = _hidden(derivation)
    largest, outputs, where = [], [], []
    for seed, batch in batches.items():
        torch.manual_seed(seed)
        model = build(derivation, widths, factory=factory, device=device, dtype=dtype)
        run = apply_parametrization(derivation, model, widths, lr=lr, optimizer=optimizer, adam_eps=adam_eps)
        data = batch.to(device, dtype)
        recorder = _Recorder(model, weights + norms)
        try:
            out0 = model(data.x)
            before = _features(recorder, weights, norms)
            f0 = out0.detach()
            loss = data.loss_value(out0 - f0 if centered else out0)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            recorder.clear()
            with torch.no_grad():
                output = float((model(data.x) - f0).float().pow(2).mean().sqrt())
            after = _features(recorder, weights, norms)
        finally:
            recorder.remove()
        changes = {name: float((after[name] - h).pow(2).mean().sqrt() / h.pow(2).mean().sqrt())
                   for name, h in before.items() if name in after and bool(h.pow(2).mean() > 0)}
        if not changes:  # no hidden feature (a single layer): the output is all there is
            changes = {"output": output / max(float(f0.float().pow(2).mean().sqrt()), 1e-30)}
        name, value = max(changes.items(), key=lambda kv: kv[1])
        if not math.isfinite(output):
            value = math.inf  # diverged
        if not (value > 0 and math.isfinite(value)):
            return value, name, output
        largest.append(math.log(value))
        outputs.append(math.log(output) if output > 0 else -math.inf)
        where.append(name)
    mean = math.exp(sum(largest) / len(largest))
    return mean, max(set(where), key=where.count), math.exp(sum(outputs) / len(outputs))


def _features(recorder: object, weights: list[str], norms: list[str]) -> dict[str, torch.Tensor]:
    """Float copies of the recorded hidden features: weight layers' outputs, norms' outputs and inputs."""
    out: dict[str, torch.Tensor] = {}
    for name in weights + norms:
        h = recorder.outputs.get(name)  # type: ignore[attr-defined]
        if h is not None and torch.is_floating_point(h):
            out[name] = h.float()
    for name in norms:
        x = recorder.inputs.get(name)  # type: ignore[attr-defined]
        if x is not None and torch.is_floating_point(x):
            out[f"{name} (input)"] = x.float()
    return out


def calibrate_lr(
    derivation: Derivation,
    widths: Mapping[str, int],
    batches: Mapping[int, Batch],
    optimizer: str,
    *,
    target: float,
    centered: bool = True,
    factory: Factory | None = None,
    device: torch.device | str = "cpu",
    adam_eps: float = ADAM_EPS,
    start: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Calibration:
    """The global learning rate whose first step moves the most-moving hidden feature by ``target``
    of its RMS at ``widths`` (see the module docstring).

    Probes one real step per seed (``batches``: seed -> batch) and rescales ``lr`` by
    ``target / change`` until the change is within 10% of ``target``. Raises ``ValueError`` when no
    probe gives a finite, non-zero change.
    """
    device = torch.device(device)
    lr = start if start is not None else (1e-3 if optimizer == "adam" else 1e-2)
    cal = Calibration(lr, dict(widths), target)
    names: dict[float, str] = {}
    for _ in range(PROBES * 3):
        change, name, output = _first_step(derivation, widths, batches, lr, optimizer, centered=centered,
                                           factory=factory, device=device, adam_eps=adam_eps, dtype=dtype)
        if not math.isfinite(change):
            lr /= 100.0  # diverged: far outside the linear regime
            continue
        if change <= 0:
            raise ValueError(f"one step at lr {lr:g} does not change the features at all")
        cal.probes.append((lr, change, output))
        names[lr] = name
        if abs(change / target - 1) <= 0.1 or len(cal.probes) >= PROBES:
            break
        lr *= target / change
    if not cal.probes:
        raise ValueError("every probe step diverged")
    # The probe closest to the target (the last one, unless the search ran out of probes).
    cal.lr = min(cal.probes, key=lambda p: abs(math.log(p[1] / target)))[0]
    cal.feature = names[cal.lr]
    return cal


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
        run = apply_parametrization(derivation, model, at, lr=0.0, optimizer="sgd")
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
