"""What weight decay does across widths: ``paramcalc verify --decay-check``.

A decoupled decay multiplies every decayed weight by ``1 - lr_t * wd_t`` each step, on top of the
optimizer's update (``lr_t``, ``wd_t``: the tensor's learning rate and weight decay, the global
values times the derived factors). After ``T`` steps it has pulled the weight towards zero by

    delta_T = 1 - ||W_T(decay)||_F / ||W_T(no decay)||_F

where both runs start from the same init and see the same batches. To first order in ``lr_t wd_t``
that is ``sum_t lr_t wd_t`` (times the fraction of the weight the decay acts on, width-independent
under muP or spectral): ``delta_T ~ T lr_t wd_t``. A norm ratio rather than the norm of the
difference: Adam's and Lion's sign-like steps flip where a gradient entry is near zero, which
perturbs the difference of the two runs at first order but their norms only at second order.
The runs are in float64. Decay is width-independent when ``delta_T`` does not
move with width: its log-log slope against the width is the Theta-exponent of the tensor's
``lr * weight_decay`` factor, 0 under the ``independent`` policy and the exponent of ``lr`` under
``coupled`` (-1 on hidden matrices under muP with AdamW: decay fades as the model widens). The
check measures ``delta_T`` per decayed tensor over ``steps`` steps (default 50) at every width of
the sweep, fits the slope and compares it with the derivation's exponent and with 0.

Adam with weight decay adds an L2 term to the gradient before normalising it, so its decay is not
``lr * weight_decay``: the check asks for AdamW (or SGD, Lion, Muon) instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from paramcalc.errors import Problem, UsageError
from paramcalc.symbolic import theta_exponent
from paramcalc.verify.config import VerifyConfig
from paramcalc.verify.fit import Slope, fit_slope
from paramcalc.verify.model import apply_parametrization, build

__all__ = ["DecayCheck", "DecayReport", "check_decay"]

#: Slopes within this of the expected exponent pass (besides the fit's own 95% margin).
TOLERANCE = 0.15


@dataclass(frozen=True)
class DecayCheck:
    """One decayed tensor: ``delta_T`` per width (mean over seeds), its fitted slope, the exponent
    the derivation predicts, and whether decay is width-independent there."""

    tensor: str
    deltas: tuple[float, ...]
    slope: Slope
    expected: float

    @property
    def ok(self) -> bool:
        return self.slope.finite and abs(self.slope.value - self.expected) <= TOLERANCE + self.slope.margin

    @property
    def width_independent(self) -> bool:
        return self.slope.finite and abs(self.slope.value) <= TOLERANCE + self.slope.margin


@dataclass
class DecayReport:
    spec: str
    parametrization: str
    optimizer: str
    policy: str
    weight_decay: float
    steps: int
    lead: str
    widths: tuple[int, ...]
    checks: list[DecayCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every decayed tensor's decay scales as derived (with the independent policy: not at all)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Everything, for ``--json``: the settings, the verdicts, and each tensor's deltas and slope."""
        checks = [{"tensor": c.tensor, "widths": list(self.widths), "deltas": list(c.deltas),
                   "slope": _finite(c.slope.value), "margin": _finite(c.slope.margin),
                   "expected": c.expected, "ok": c.ok,
                   "width_independent": c.width_independent} for c in self.checks]
        return {"spec": self.spec, "parametrization": self.parametrization, "optimizer": self.optimizer,
                "policy": self.policy, "weight_decay": self.weight_decay, "steps": self.steps,
                "lead": self.lead, "passed": self.passed, "exit_code": 0 if self.passed else 1,
                "checks": checks}

    def text(self) -> str:
        """A table, one row per tensor (a repeated block's tensors: one row, the worst), then the verdict."""
        head = (f"{self.spec}: {self.parametrization}, {self.optimizer}, weight decay {self.weight_decay:g} "
                f"({self.policy}), {self.steps} steps, {self.lead} = "
                f"{', '.join(map(str, self.widths))}")
        lines = [head, f"{'tensor':<40} {'delta_T per width':<36} {'slope':>14} {'expected':>9}  verdict"]
        for name, c in _worst_per_pattern(self.checks):
            deltas = " ".join(f"{v:.3g}" for v in c.deltas)
            slope = f"{c.slope.value:+.2f} ± {c.slope.margin:.2f}"
            verdict = ("ok" if c.ok else "FAIL") + (", width-independent" if c.width_independent else
                                                      f", scales like n^{c.slope.value:+.2f}")
            lines.append(f"{name:<40} {deltas:<36} {slope:>14} {c.expected:>+9.2f}  {verdict}")
        n = len(self.checks)
        lines.append(f"{'PASS' if self.passed else 'FAIL'}: decay scales as the {self.policy} policy derives "
                     f"on {sum(c.ok for c in self.checks)} of {n} decayed tensors and is width-independent "
                     f"on {sum(c.width_independent for c in self.checks)} of {n}; "
                     "delta_T = 1 - ||W_T(decay)||_F / ||W_T(none)||_F")
        return "\n".join(lines) + "\n"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _worst_per_pattern(checks: list[DecayCheck]) -> list[tuple[str, DecayCheck]]:
    """``blocks.*.attn.q.weight (x12)`` with the check furthest from its expected slope."""
    import re

    groups: dict[str, list[DecayCheck]] = {}
    for c in checks:
        groups.setdefault(re.sub(r"(?<=\.)\d+(?=\.)", "*", c.tensor), []).append(c)
    out = []
    for pattern, members in groups.items():
        worst = max(members, key=lambda c: abs(c.slope.value - c.expected) if c.slope.finite else math.inf)
        out.append((pattern if len(members) == 1 else f"{pattern} (x{len(members)})", worst))
    return out


def check_decay(
    spec: Any, config: VerifyConfig, *, progress: Callable[[str], None] | None = None
) -> DecayReport:
    """Train with and without weight decay at every width of ``config`` and judge ``delta_T``."""
    from paramcalc.verify.plan import plan

    if config.weight_decay <= 0:
        raise UsageError([Problem("--weight-decay", "the decay check needs a positive weight decay")],
                         source="command line")
    if config.optimizer == "adam":
        raise UsageError([Problem("--optimizer", "Adam's weight decay is an L2 term inside its "
                                                  "normalisation, not lr * weight_decay: check adamw (or "
                                                  "sgd, lion, muon)")], source="command line")
    p = plan(spec, replace(config, dtype=config.dtype or "float64"))
    d = p.derivation
    decayed = [n for n in d if d[n].weight_decay != 0 and len(d[n].tensor.shape) >= 2]
    xs, per_width = [], []
    for at in p.widths:
        if progress is not None:
            progress(f"{p.lead} = {at[p.lead]}")
        xs.append(float(at[p.lead]))
        per_width.append([_deltas(p, at, seed, decayed) for seed in p.seeds])
    report = DecayReport(d.spec.name, d.parametrization, d.optimizer.name, d.weight_decay,
                         config.weight_decay, config.steps, p.lead, tuple(int(x) for x in xs))
    scaling = d.spec.scaling_symbols
    for name in decayed:
        rows = [[per_width[i][s][name] for i in range(len(xs))] for s in range(len(p.seeds))]
        expected = theta_exponent(d[name].lr * d[name].weight_decay, scaling)
        mean = tuple(math.exp(sum(math.log(max(r[i], 1e-300)) for r in rows) / len(rows))
                     for i in range(len(xs)))
        report.checks.append(DecayCheck(name, mean, fit_slope(xs, rows), float(expected or 0)))
    return report


def _deltas(p: Any, at: Mapping[str, int], seed: int, names: list[str]) -> dict[str, float]:
    """``delta_T`` of each tensor in ``names`` at widths ``at`` for one seed."""
    final = [_train(p, at, seed, wd) for wd in (p.config.weight_decay, 0.0)]
    out = {}
    for name in names:
        with_decay, without = final[0][name], final[1][name]
        out[name] = float(1 - with_decay.norm() / without.norm())
    return out


def _train(p: Any, at: Mapping[str, int], seed: int, weight_decay: float) -> dict[str, torch.Tensor]:
    """The weights after ``steps`` full-batch steps with ``weight_decay`` (float64 copies)."""
    s = p.settings
    torch.manual_seed(seed)
    model = build(p.derivation, at, factory=p.factory, device=p.device, dtype=s.dtype)
    run = apply_parametrization(p.derivation, model, at, lr=s.lr, adam_lr=s.lr * s.adam_lr_ratio,
                                adam_eps=s.adam_eps, weight_decay=weight_decay, options=s.options)
    batch = p.batches[seed].to(p.device, s.dtype)
    with torch.no_grad():
        f0 = model(batch.x)  # build() makes a factory's model return its output tensor
    for _ in range(p.config.steps):
        out = model(batch.x)
        loss = batch.loss_value(out - f0 if s.centered else out)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not run.step():
            raise UsageError([Problem("--lr", f"lr {s.lr:g} times a tensor's factor overflows "
                                              f"{s.dtype}: the run diverges, there is no decay to measure")],
                             source="command line")
    params = dict(model.named_parameters())
    return {name: params[name].detach().double() for name in p.derivation if name in params}

