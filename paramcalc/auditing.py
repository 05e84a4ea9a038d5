"""Audit a user's own model and optimizer against a derivation, tensor by tensor.

    report = paramcalc.audit(model, optimizer, d, widths)
    print(report.text()); report.ok; report.rows   # one per tensor, each with its checks

Read from the live objects: every parameter's current std (and mean, for constant-init tensors),
the lr and weight decay of the optimizer group holding it, the forward-multiplier hooks installed
on each layer, and each attention module's logit scale. Compared with the derivation at
``widths`` (numbers from :meth:`Derivation.evaluate`; nothing derived again):

- ``init_std``: the std must be the derived one within sampling error (run it before training);
- ``lr``: each tensor's lr over its factor must be one global lr (``lr=`` gives it; else the value
  most tensors agree on is taken and reported): one lr for all under muP at 4x base fails here;
- ``multiplier``: a layer whose multiplier is not 1 must have paramcalc's hook with that value (a
  tied readout at 2x base without its 1/2);
- ``attention_scale``: each attention module's ``scaling``/``scale`` must be the derived one;
- ``residual``: where depth scales, each block's branch multiplier must be the derived one (a model
  paramcalc built, or Hugging Face blocks :mod:`paramcalc.infer.branches` knows; other models'
  blocks apply it in their own code, which the audit cannot read);
- ``weight_decay``: no decay on the kinds the derivation does not decay (gains, biases and
  embedding tables by default), and each decayed tensor's decay over its ``weight_decay`` factor
  one value (under the independent policy a decay that does not grow where lr shrinks fails, as
  with a plain ``AdamW(model.parameters(), weight_decay=...)``), judged against ``weight_decay=``
  (the value tuned at base) when given, else against the value most tensors agree on: a decay
  that is off alike on every tensor is then consistent and passes;
- ``eps``: each Adam-trained tensor's epsilon over its factor one value (``eps=``, else inferred).
- Under Muon, ``lr`` is judged per optimizer: Muon's tensors against ``lr``, AdamW's against
  ``adam_lr`` (each inferred when not given).

Each row says expected, found, their ratio, the verdict and the one-line fix.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditReport", "AuditRow", "TensorAudit", "audit"]


@dataclass(frozen=True)
class AuditRow:
    tensor: str
    quantity: str
    expected: float
    found: float
    ok: bool
    fix: str = ""

    @property
    def ratio(self) -> float:
        if self.expected == 0:
            return 1.0 if self.found == 0 else math.inf
        return self.found / self.expected


@dataclass(frozen=True)
class TensorAudit:
    """One tensor's checks: its own (init, lr, weight decay) and its layer's (forward multiplier,
    attention scale); a tied use's layer checks count on the tensor it uses."""

    tensor: str
    checks: tuple[AuditRow, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass
class AuditReport:
    #: Every check, in order: per tensor, then per layer.
    checks: list[AuditRow]
    #: One row per tensor of the derivation, in its order (CONTRACT.md: ``report.rows``).
    rows: list[TensorAudit]
    lr: float
    lr_inferred: bool
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[AuditRow]:
        """The failing checks."""
        return [c for c in self.checks if not c.ok]

    def text(self, rows: str = "failing") -> str:
        """A table of the checks (``"failing"`` or ``"all"``), then the verdict."""
        shown = self.checks if rows == "all" else self.failures
        how = "inferred: the value most tensors agree on" if self.lr_inferred else "given"
        lines = [f"global lr {self.lr:.6g} ({how})", *(f"note: {n}" for n in self.notes)]
        if shown:
            lines.append(f"{'tensor':<48} {'quantity':<16} {'expected':>11} {'found':>11} "
                         f"{'ratio':>8}  verdict")
        for r in shown:
            fix = f"  fix: {r.fix}" if not r.ok else ""
            lines.append(f"{r.tensor:<48} {r.quantity:<16} {r.expected:>11.4g} {r.found:>11.4g} "
                         f"{r.ratio:>8.3g}  {'ok' if r.ok else 'FAIL'}{fix}")
        checked = len(self.checks)
        verdict = "audit passed" if self.ok else f"audit FAILED: {len(self.failures)} of {checked} checks"
        return "\n".join([*lines, f"{verdict} ({checked} checks)"]) + "\n"


def _groups(optimizer: Any) -> dict[int, Mapping[str, Any]]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


def _std_rows(d: Any, params: Mapping[str, Any], widths: Mapping[str, int]) -> list[AuditRow]:
    from paramcalc.symbolic import numeric

    values, at = d.evaluate(widths), d._numeric_widths(widths)
    rows = []
    for name, v in values.items():
        p = params[name].detach().float()
        if v["init_std"] > 0:
            tol = max(0.1, 4 / math.sqrt(2 * max(p.numel(), 1)))
            found = float(p.std()) if p.numel() > 1 else float(p.abs().mean())
            rows.append(AuditRow(name, "init_std", v["init_std"], found, _close(found, v["init_std"], tol),
                                 "re-initialise it: paramcalc.torch.apply(model, d, widths)"))
        else:
            expected = numeric(d[name].init_mean, at, {})
            found = float(p.mean())
            spread = float(p.std()) if p.numel() > 1 else 0.0
            ok = abs(found - expected) <= 1e-6 + 1e-3 * abs(expected) and spread < 1e-6
            rows.append(AuditRow(name, "init_mean", expected, found, ok,
                                 "it should start constant: paramcalc.torch.apply(model, d, widths)"))
    return rows


def _lr_rows(
    values: Mapping[str, Any], found: Mapping[str, float], lr: float | None
) -> tuple[list[AuditRow], float, bool]:
    ratios = [found[n] / values[n]["lr"] for n in values if values[n]["lr"] > 0]
    inferred = lr is None
    if lr is None:
        counts = Counter(float(f"{r:.6g}") for r in ratios)
        lr = counts.most_common(1)[0][0] if counts else 0.0
    rows = []
    for n, v in values.items():
        want = lr * v["lr"]
        rows.append(AuditRow(n, "lr", want, found[n], _close(found[n], want, 1e-6),
                             f"train it with lr {want:.6g}: "
                             "paramcalc.torch.param_groups(model, d, lr, widths)"))
    return rows, lr, inferred


def _multiplier_rows(model: Any, d: Any, widths: Mapping[str, int]) -> list[AuditRow]:
    from paramcalc.torch import emitted

    rows = []
    namespace = emitted(d)
    packed = {part: (layer, i) for layer, pair in namespace.get("PACKED_ATTENTION", {}).items()
              for i, part in enumerate(pair)}
    for layer, (weight, bias) in namespace["layer_multipliers"](widths).items():
        if layer in packed:  # an nn.MultiheadAttention's projection: its forward applies them
            holder, i = packed[layer]
            module = model.get_submodule(holder)
            own = _packed_forward_of(module, namespace)
            unset = (1.0, None if bias is None else 1.0)
            found, found_bias = module.paramcalc_multipliers[i] if own else unset
            hooks = [own] if own else []
        else:
            hooks = [h for h in model.get_submodule(layer)._forward_hooks.values()
                     if getattr(h, "paramcalc_multiplier", False)]
            found = hooks[-1].weight if hooks else 1.0
            found_bias = hooks[-1].bias if hooks else (None if bias is None else 1.0)
        ok = _close(found, weight, 1e-9) and (bias is None or _close(found_bias, bias, 1e-9))
        if weight != 1 or hooks or (bias is not None and bias != 1):
            rows.append(AuditRow(f"{layer}", "multiplier", weight, found, ok,
                                 "install it: paramcalc.torch.apply(model, d, widths)"))
    return rows


def _packed_forward_of(module: Any, namespace: Mapping[str, Any]) -> bool:
    """Whether an ``nn.MultiheadAttention`` computes with the emitted forward (its multipliers and
    logit scale), not torch's own."""
    forward = module.__dict__.get("forward")
    return getattr(forward, "__func__", None) is namespace.get("_packed_forward", False)


def _attention_rows(model: Any, d: Any, widths: Mapping[str, int]) -> list[AuditRow]:
    from torch import nn

    from paramcalc.torch import attention_modules, emitted

    values = d.evaluate_constants(widths)
    rows = []
    for layer, (module, attr) in attention_modules(model, d).items():
        expected = values[f"{layer}.scale"]
        found = float(getattr(module, attr)) if attr else math.nan
        if isinstance(module, nn.MultiheadAttention) and not _packed_forward_of(module, emitted(d)):
            found = 1 / math.sqrt(module.head_dim)  # torch's own: a `scale` attribute alone does nothing
        rows.append(AuditRow(layer, "attention_scale", expected, found, _close(found, expected, 1e-9),
                             "set it: paramcalc.torch.apply(model, d, widths) (or scale= in attention)"))
    return rows


def _residual_rows(model: Any, d: Any, widths: Mapping[str, int]) -> list[AuditRow]:
    from paramcalc.infer.branches import branch_scale

    values = d.evaluate_constants(widths)
    rows = []
    for block in d.spec.depth_blocks:
        key = f"{block.name}.residual"
        own = getattr(model, "residual_scales", None)
        found = [own[key]] if isinstance(own, dict) and key in own else branch_scale(model, block.name)
        if not found:
            continue
        worst = max(found, key=lambda s: abs(s - values[key]))
        rows.append(AuditRow(block.name, "residual", values[key], worst, _close(worst, values[key], 1e-9),
                             "set it: paramcalc.torch.apply(model, d, widths) "
                             "(or x = x + scale * branch(x))"))
    return rows


def _decay_rows(d: Any, params: Mapping[str, Any], groups: Mapping[int, Any], widths: Any,
                base: float | None) -> list[AuditRow]:
    values = d.evaluate(widths)
    rows, products = [], {}
    for name, p in params.items():
        wd = float(groups[id(p)].get("weight_decay", 0.0) or 0.0)
        factor = values[name]["weight_decay"]
        if factor == 0:
            if wd:
                fix = f"no decay on it (the derivation decays: {', '.join(d.decay)}): " \
                      "paramcalc.torch.param_groups"
                rows.append(AuditRow(name, "weight_decay", 0.0, wd, False, fix))
            continue
        if wd:
            products[name] = wd / factor  # the decay it would have at base
    if products:
        common = base if base is not None else _most_common(products.values())
        for name, base_wd in products.items():
            want = common * values[name]["weight_decay"]
            found = base_wd * values[name]["weight_decay"]
            rows.append(AuditRow(name, "weight_decay", want, found, _close(found, want, 1e-6),
                                 f"weight_decay {want:.6g} ({d.weight_decay} decay): "
                                 "paramcalc.torch.param_groups(..., weight_decay=...)"))
    return rows


def _eps_rows(d: Any, params: Mapping[str, Any], groups: Mapping[int, Any], widths: Any,
              base: float | None) -> list[AuditRow]:
    """Adam's epsilon: each group's ``eps`` over the tensor's factor must be one value."""
    values = d.evaluate(widths)
    found = {n: float(groups[id(p)]["eps"]) for n, p in params.items()
             if d.law(n).has_eps and "eps" in groups[id(p)]}
    if not found:
        return []
    common = base if base is not None else _most_common(found[n] / values[n]["eps"] for n in found)
    rows = []
    for n, eps in found.items():
        want = common * values[n]["eps"]
        rows.append(AuditRow(n, "eps", want, eps, _close(eps, want, 1e-6),
                             f"eps {want:.6g}: paramcalc.torch.param_groups(..., eps=...)"))
    return rows


def _most_common(values: Any) -> float:
    counts = Counter(float(f"{v:.6g}") for v in values)
    return counts.most_common(1)[0][0] if counts else 0.0


def audit(model: Any, optimizer: Any, derivation: Any, widths: Mapping[str, int] | None = None, *,
          lr: float | None = None, weight_decay: float | None = None, eps: float | None = None,
          adam_lr: float | None = None) -> AuditReport:
    """Compare ``model`` and ``optimizer`` with ``derivation`` at ``widths`` (the integers the model
    is built with); ``lr``: the global learning rate, else inferred (``adam_lr``: under Muon, AdamW's);
    ``weight_decay`` and ``eps``: the ones tuned at the base widths, else the value most tensors agree
    on (then a decay that shrinks
    alike on every matrix, as with one lr factor for all, cannot be seen). See the module docstring."""
    from paramcalc.errors import UsageError

    d = derivation.at_depth(widths) if widths and derivation.spec.depth_blocks else derivation  # its blocks
    widths = d.resolve_widths(widths)
    params = dict(model.named_parameters())
    missing = [n for n in d if n not in params]
    if missing:
        raise UsageError(f"the model has no parameters {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                         f"is it the model of spec {d.spec.name!r}?", source="audit")
    params = {n: params[n] for n in d}
    groups = _groups(optimizer)
    untrained = [n for n, p in params.items() if id(p) not in groups]
    found = {n: float(groups[id(p)]["lr"]) for n, p in params.items() if id(p) in groups}
    values = d.evaluate(widths)
    rows, notes = _std_rows(d, params, widths), []
    global_lr, inferred = 0.0, lr is None
    for law in d.laws:  # one global lr per optimizer (under Muon: Muon's and AdamW's)
        mine = {n: f for n, f in found.items() if d[n].optimizer == law}
        given = lr if law == d.optimizer.name else adam_lr
        lr_rows, law_lr, _ = _lr_rows({n: values[n] for n in mine}, mine, given)
        rows += lr_rows
        if law == d.optimizer.name:
            global_lr = law_lr
        elif mine:
            notes.append(f"{law} lr {law_lr:.6g} ({'given' if given is not None else 'inferred'})")
    rows += _multiplier_rows(model, d, widths) + _attention_rows(model, d, widths)
    rows += _residual_rows(model, d, widths)
    trained = {n: params[n] for n in found}
    rows += _decay_rows(d, trained, groups, widths, weight_decay) + _eps_rows(d, trained, groups, widths, eps)
    rows += [AuditRow(n, "lr", values[n]["lr"], 0.0, False, "the optimizer does not train it: "
                      "build it from paramcalc.torch.param_groups(model, d, lr, widths)") for n in untrained]
    return AuditReport(rows, _per_tensor(d, rows), global_lr, inferred, notes)


def _per_tensor(d: Any, checks: list[AuditRow]) -> list[TensorAudit]:
    """Each tensor's checks: those naming it, its layer (a prefix of its name) or, for a tied use, the
    layer that uses it."""
    tied = {layer: use.tensor for layer, use in d.tied.items()}
    def mine(c: AuditRow, name: str) -> bool:
        return c.tensor == name or name.startswith(f"{c.tensor}.") or tied.get(c.tensor) == name \
            or name in (f"{c.tensor}_weight", f"{c.tensor}_bias")  # a packed projection's tensors

    return [TensorAudit(name, tuple(c for c in checks if mine(c, name))) for name in d]
