"""The global learning rate of a verify run, from the calculus or from probe steps.

A global constant cannot move an exponent; it only decides how far the first steps are from the
linear regime. ``lr="auto"`` picks one per parametrization so that every parametrization makes the
same progress where it is compared and differs only in how it scales away from there.

From the calculus (:func:`calculus_lr`)
    For a chain: the learning rate whose predicted first step changes the output by RMS
    ``output_rms_change`` at the spec's base widths (where hyperparameters are tuned). Every update is
    linear in the global learning rate on the first step, so this is one division.

From probe steps (:func:`calibrate_lr`)
    Where there is no calculus (a transformer, or a factory's model that is not a chain): one step
    of the real optimizer at the smallest width of the sweep, from the same init and batch as the
    runs that follow, and the change of every hidden feature (each weight layer's output but the
    last, each norm's output and input: the residual stream). ``lr`` is chosen so that the feature
    that moves most, relative to its own RMS, moves by ``target`` = 10%: the first step is then small
    everywhere (the first-step regime the theory and the judge's slopes are about) and large enough
    to measure. The output is left out on purpose: a muP or spectral readout starts near zero by
    design, so its change says little about how far the network moved (docs/verify.md). The change
    is linear in ``lr`` to first order: for SGD because ``dW = -lr G``; for Adam because its first
    step is ``-lr G / (|G| + eps)``, ``lr`` times a tensor that does not depend on ``lr``. So
    ``lr <- lr * target / change`` hits the target up to second-order terms, and a further probe at
    that ``lr`` corrects those (at most :data:`PROBES` probes, until within 10%).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from paramcalc.engine import Derivation
from paramcalc.engine.calculus import Scaling
from paramcalc.verify.data import Batch
from paramcalc.verify.measure import ADAM_EPS
from paramcalc.verify.model import apply_parametrization, build
from paramcalc.verify.observe import Recorder

__all__ = ["PROBES", "Calibration", "ProbeSetup", "calculus_lr", "calibrate_lr"]

#: Most probe steps :func:`calibrate_lr` takes.
PROBES = 4

Factory = Callable[[dict[str, int]], nn.Module]


def calculus_lr(
    scaling: Scaling, widths: Mapping[str, int] | None = None, output_rms_change: float = 0.1
) -> float:
    """The global learning rate whose predicted first step changes the output by ``output_rms_change``.

    Evaluated at ``widths`` (default: the spec's base widths, where the hyperparameters are tuned).
    """
    per_unit = scaling.evaluate(widths, lr=1.0)[("rms_dh", scaling.output_layer)]
    if not (per_unit > 0 and math.isfinite(per_unit)):
        raise ValueError(f"the predicted output change per unit learning rate is {per_unit}")
    return output_rms_change / per_unit


@dataclass(frozen=True)
class ProbeSetup:
    """How probe models are built and trained: as the runs that follow them are."""

    centered: bool = True
    factory: Factory | None = None
    device: torch.device | str = "cpu"
    adam_eps: float = ADAM_EPS
    dtype: torch.dtype = torch.float32
    #: Under Muon: AdamW's learning rate over Muon's (:func:`paramcalc.engine.factors.partner_lr_ratio`).
    adam_lr_ratio: float = 1.0


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


def _hidden(derivation: Derivation) -> tuple[list[str], list[str]]:
    """Weight layers but the last, and norms: the hidden features the probe watches."""
    spec = derivation.spec
    weights = [layer.name for layer in spec.weight_layers]
    return weights[:-1], [layer.name for layer in spec.layers if layer.definition.chain_role == "gain"]


def _first_step(
    derivation: Derivation, widths: Mapping[str, int], batches: Mapping[int, Batch], lr: float,
    setup: ProbeSetup,
) -> tuple[float, str, float]:
    """One step at ``lr`` per seed: geometric means over seeds of the largest relative change of a
    hidden feature (and which one, most often) and of the output's RMS change."""
    weights, norms = _hidden(derivation)
    largest, outputs, where = [], [], []
    for seed, batch in batches.items():
        torch.manual_seed(seed)
        device = torch.device(setup.device)
        model = build(derivation, widths, factory=setup.factory, device=device, dtype=setup.dtype)
        run = apply_parametrization(derivation, model, widths, lr=lr, adam_lr=lr * setup.adam_lr_ratio,
                                    adam_eps=setup.adam_eps)
        data = batch.to(device, setup.dtype)
        recorder = Recorder(model, weights + norms)
        try:
            out0 = model(data.x)
            before = _features(recorder, weights, norms)
            f0 = out0.detach()
            loss = data.loss_value(out0 - f0 if setup.centered else out0)
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
    setup: ProbeSetup = ProbeSetup(),
    start: float | None = None,
) -> Calibration:
    """The global learning rate whose first step moves the most-moving hidden feature by ``target``
    of its RMS at ``widths`` (no calculus; see the module docstring).

    Probes one real step per seed (``batches``: seed -> batch) and rescales ``lr`` by
    ``target / change`` until the change is within 10% of ``target``. ``optimizer`` must be the
    derivation's (its emitted optimizers are what the probes step). Raises ``ValueError`` when no
    probe gives a finite, non-zero change.
    """
    if optimizer != derivation.optimizer.name:
        raise ValueError(f"the derivation is for {derivation.optimizer.name}, not {optimizer}")
    lr = start if start is not None else derivation.optimizer.probe_lr
    cal = Calibration(lr, dict(widths), target)
    names: dict[float, str] = {}
    for _ in range(PROBES * 3):
        change, name, output = _first_step(derivation, widths, batches, lr, setup)
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


