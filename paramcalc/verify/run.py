"""``verify``: sweep widths, measure, fit, judge; the :class:`Report` it returns.

The pipeline for one parametrization and optimizer:

1. derive the parametrization (:func:`paramcalc.derive`), and run the first-step calculus on it
   (:func:`paramcalc.derive.calculus.scaling`) when the spec is a chain;
2. choose the global learning rate: given, or ``auto``, the one whose predicted first step changes
   the output by RMS 0.1 at the spec's base widths (where hyperparameters are tuned): every
   parametrization then makes the same progress at the base width and differs only in how it
   scales away from it;
3. at each width of the sweep and each seed: build the model, apply the parametrization through
   the emitted code, train ``steps`` full-batch steps and measure (:mod:`paramcalc.verify.measure`);
4. fit a slope per quantity across widths and judge it (:mod:`paramcalc.verify.judge`).

A width whose run needs more memory than the device has free is skipped with a message; a run whose
loss or features stop being finite is a divergence, reported as a finding and a failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
from torch import nn

import paramcalc
from paramcalc.derive import Derivation
from paramcalc.derive.calculus import (
    QUANTITIES,
    FiniteWidthNote,
    NotAChain,
    Scaling,
    local_scaling,
    loglog_slope,
    scaling,
    sweep,
    target_exponents,
)
from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Spec
from paramcalc.verify.data import Batch, make_batch
from paramcalc.verify.judge import Check, Slope, fit_slope, judge
from paramcalc.verify.measure import Measurement, RunSettings, measure_width
from paramcalc.verify.model import available_memory, load_factory, memory_needed

__all__ = ["DEFAULT_WIDTHS", "FiniteWidthNote", "Report", "resolve_device", "verify"]

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
#: The predicted first-step RMS change of the output that ``lr="auto"`` aims for at base widths.
AUTO_OUTPUT_CHANGE = 0.1

Progress = Callable[[int, int, Mapping[str, int]], None]


@dataclass
class Report:
    """Everything a verify run found: settings, raw measurements, slopes, checks and the verdict."""

    spec: Spec
    parametrization: str
    optimizer: str
    form: str
    loss: str
    data: str
    lr: float
    lr_auto: bool
    steps: int
    batch: int
    seeds: list[int]
    device: str
    lead: str
    widths: list[dict[str, int]]
    measurements: list[Measurement]
    scaling: Scaling | None
    slopes: dict[tuple[str, str, int], Slope]
    predicted_slopes: dict[tuple[str, str, int], float]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    emitted: bool = False
    centered: bool = True

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and not self.findings and bool(self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def summary(self) -> str:
        """One paragraph: the verdict and, for a failure, which layers fail and how fast."""
        head = f"{self.spec.name}: {self.parametrization}, {self.optimizer}"
        if self.passed:
            agree = ("the measurements agree with the calculus." if self.scaling is not None
                     and self.scaling.loss != "local" else
                     "the measurements agree with the per-tensor predictions (not a chain).")
            return (f"{head}: PASS. Features and their updates keep RMS Theta(1) (Desideratum 1) and "
                    f"||W||_*, ||dW||_* scale like sqrt(fan_out/fan_in) (Condition 1) across "
                    f"{self.lead} = {self.widths[0][self.lead]}..{self.widths[-1][self.lead]}; {agree}")
        parts = []
        targets = [c for c in self.failures if c.kind == "target"]
        agreements = [c for c in self.failures if c.kind == "agreement"]
        if targets:
            parts.append("fails the paper's conditions: " + "; ".join(c.message for c in targets[:6])
                         + (f"; and {len(targets) - 6} more" if len(targets) > 6 else ""))
        if agreements:
            parts.append("MEASUREMENT AND PREDICTION DISAGREE, a bug somewhere: "
                         + "; ".join(c.message for c in agreements[:4]))
        parts.extend(self.findings)
        if not self.checks:
            parts.append("nothing could be checked")
        return f"{head}: FAIL. " + " ".join(p[0].upper() + p[1:] + "." for p in parts)

    # Aggregates ---------------------------------------------------------------------------------
    def values(self, quantity: str, subject: str, step: int) -> list[list[float]]:
        """``[seed][width]`` measured values (NaN where missing)."""
        out = []
        for seed in self.seeds:
            row = []
            for at in self.widths:
                m = self._find(at, seed)
                row.append(math.nan if m is None else m.values.get((quantity, subject, step), math.nan))
            out.append(row)
        return out

    def _find(self, at: Mapping[str, int], seed: int) -> Measurement | None:
        for m in self.measurements:
            if m.seed == seed and m.widths == at:
                return m
        return None

    @property
    def lead_values(self) -> list[int]:
        return [at[self.lead] for at in self.widths]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, the verdict, checks, slopes, predictions and raw values."""

        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 6)

        def exp(x: sympy.Rational | None) -> str | None:
            return None if x is None else str(x)

        keys = sorted({(q, s) for q, s, _ in self.slopes})
        quantities: dict[str, Any] = {}
        for q, s in keys:
            steps = sorted(st for qq, ss, st in self.slopes if (qq, ss) == (q, s))
            entry: dict[str, Any] = {
                "title": QUANTITIES[q].title if q in QUANTITIES else q,
                "steps": {
                    str(st): {
                        "slope": num(self.slopes[(q, s, st)].value),
                        "stderr": num(self.slopes[(q, s, st)].stderr),
                        "per_seed": [num(v) for v in self.slopes[(q, s, st)].per_seed],
                        "predicted_slope": num(self.predicted_slopes.get((q, s, st))),
                        "values": self.values(q, s, st),
                    }
                    for st in steps
                },
            }
            if self.scaling is not None and (q, s) in self.scaling:
                pred = self.scaling[(q, s)]
                entry["predicted_exponent"] = exp(pred.exponent)
                entry["predicted_expression"] = str(pred.expr)
            quantities.setdefault(s, {})[q] = entry
        for entry in quantities.values():
            for q in entry.values():
                for st in q["steps"].values():
                    st["values"] = [[num(v) for v in row] for row in st["values"]]
        return {
            "spec": self.spec.name,
            "source": self.spec.source,
            "parametrization": self.parametrization,
            "optimizer": self.optimizer,
            "form": self.form,
            "loss": self.loss,
            "centered": self.centered,
            "data": self.data,
            "lr": self.lr,
            "lr_auto": self.lr_auto,
            "steps": self.steps,
            "batch": self.batch,
            "seeds": self.seeds,
            "device": self.device,
            "emitted_code": self.emitted,
            "sweep": {"width": self.lead, "values": self.lead_values, "widths": self.widths},
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "findings": self.findings,
            "skipped": self.skipped,
            "notes": self.notes,
            "checks": [
                {
                    "kind": c.kind, "quantity": c.quantity, "subject": c.subject, "step": c.step,
                    "measured": num(c.measured.value), "stderr": num(c.measured.stderr),
                    "predicted": num(c.predicted), "exponent": exp(c.exponent), "target": exp(c.target),
                    "offset": num(c.offset), "passed": c.passed, "message": c.message,
                }
                for c in self.checks
            ],
            "quantities": quantities,
            "runs": [
                {"widths": m.widths, "seed": m.seed, "loss": [num(v) for v in m.loss],
                 "diverged_at": m.diverged_at, "seconds": round(m.seconds, 4),
                 "measure_seconds": round(m.measure_seconds, 4)}
                for m in self.measurements
            ],
        }


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for CUDA without one is bad input."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError([Problem("--device", "cuda was asked for, but no CUDA device is available")],
                        source="command line")
    if device not in ("cpu", "cuda"):
        raise SpecError([Problem("--device", f"expected auto, cpu or cuda, got {device!r}")],
                        source="command line")
    return torch.device(device)


def verify(
    spec: Spec | Mapping[str, Any] | str,
    parametrization: str = "spectral",
    optimizer: str = "sgd",
    *,
    form: str | None = None,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    steps: int = 3,
    seeds: int | Sequence[int] = 3,
    batch: int = 32,
    data: str = "synthetic",
    loss: str = "mse",
    lr: float | None = None,
    device: str = "auto",
    model: str | Callable[[dict[str, int]], nn.Module] | None = None,
    measure_steps: Sequence[int] | None = None,
    progress: Progress | None = None,
    seq: int = 8,
    center: bool = True,
) -> Report:
    """Verify ``parametrization`` x ``optimizer`` on ``spec`` across ``widths`` (see the module docstring).

    ``widths`` are values of the spec's first scaling width; ``seeds`` a count or a list;
    ``lr`` the global learning rate (``None``: auto); ``model`` a factory ``module:function`` (or a
    callable) returning the model at given widths, required when the spec is not a chain or a
    transformer :func:`paramcalc.models.build_model` understands. Raises
    :class:`~paramcalc.SpecError` on bad input.

    >>> report = verify("examples/mlp.yaml", "mup", "adam", widths=[32, 64], seeds=1)  # doctest: +SKIP
    >>> report.passed, report.exit_code                                                 # doctest: +SKIP
    """
    loaded = paramcalc.load_spec(spec)  # type: ignore[arg-type]
    _check_settings(steps, widths, batch, measure_steps)
    try:
        derivation = paramcalc.derive(loaded, parametrization, optimizer, form=form)
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(str(exc), source="command line") from None
    sweep_widths = sweep(loaded, sorted(set(widths)))
    lead = next(w.name for w in loaded.widths.values() if w.scaling)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SpecError([Problem("--seeds", "at least one seed")], source="command line")
    dev = resolve_device(device)
    factory = load_factory(model) if isinstance(model, str) else model

    calc: Scaling | None = None
    notes: list[str] = []
    chain = True
    try:
        calc = scaling(derivation, loss, centered=center)
    except NotAChain as exc:
        chain = False
        calc = local_scaling(derivation)
        notes.append(f"Partial predictions: the first-step calculus propagates through chains only ({exc}). "
                     "Predicted here, tensor by tensor: ||W||_* at init; features and updates are judged "
                     "against Desideratum 1 and Condition 1 directly.")
    structure = _structure(loaded, factory)
    lr_auto = lr is None
    if lr is None:
        if not chain:
            raise SpecError([Problem("--lr", "this spec is not a chain, so no learning rate can be "
                                             "calibrated from the calculus; give --lr")],
                            source="command line")
        lr = calc.calibrate_lr(None, AUTO_OUTPUT_CHANGE)
    if not (lr > 0 and math.isfinite(lr)):
        raise SpecError([Problem("--lr", f"expected a positive learning rate, got {lr}")],
                        source="command line")
    settings = RunSettings(optimizer, float(lr), steps,
                           frozenset(measure_steps) if measure_steps is not None else None, centered=center)

    measurements: list[Measurement] = []
    skipped: list[str] = []
    findings: list[str] = []
    batches: dict[int, Batch] = {}
    done_widths: list[dict[str, int]] = []
    for index, at in enumerate(sweep_widths):
        if progress is not None:
            progress(index, len(sweep_widths), at)
        reason = _does_not_fit(derivation, at, batch, optimizer, dev)
        if reason:
            skipped.append(f"{lead} = {at[lead]} skipped: {reason}")
            continue
        try:
            runs = []
            for seed in seed_list:
                if seed not in batches:
                    batches[seed] = make_batch(data=data, loss=loss, batch=batch, seed=seed,
                                               n_in=structure.n_in(at), n_out=structure.n_out(at),
                                               sparse=structure.sparse, seq=structure.seq(seq))
                runs.append(measure_width(derivation, at, seed, batches[seed], settings,
                                          factory=factory, device=dev))
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            skipped.append(f"{lead} = {at[lead]} skipped: out of memory on {dev.type}")
            _free(dev)
            continue
        measurements.extend(runs)
        done_widths.append(at)
    if progress is not None:
        progress(len(sweep_widths), len(sweep_widths), sweep_widths[-1])

    diverged = [m for m in measurements if m.diverged_at is not None]
    if diverged:
        by_width: dict[int, list[Measurement]] = {}
        for m in diverged:
            by_width.setdefault(m.widths[lead], []).append(m)
        parts = [f"{lead} = {w} at step {min(m.diverged_at for m in ms)} "  # type: ignore[type-var]
                 f"({len(ms)}/{len(seed_list)} seeds)" for w, ms in sorted(by_width.items())]
        findings.append("training diverged (loss or features not finite): " + ", ".join(parts))
    if len(done_widths) < 2:
        findings.append(f"fewer than two widths could be measured ({len(done_widths)}); no slope to fit")

    report = Report(
        spec=loaded, parametrization=derivation.parametrization, optimizer=derivation.optimizer.name,
        form=derivation.form, loss=loss, data=data, lr=float(lr), lr_auto=lr_auto, steps=steps,
        batch=batch, seeds=seed_list, device=str(dev), lead=lead, widths=done_widths,
        measurements=measurements, scaling=calc, slopes={}, predicted_slopes={}, checks=[],
        notes=notes, findings=findings, skipped=skipped,
        emitted=any(m.emitted for m in measurements), centered=center,
    )
    _fit_and_judge(report, derivation, settings)
    return report


def _fit_and_judge(report: Report, derivation: Derivation, settings: RunSettings) -> None:
    keys = sorted({k for m in report.measurements for k in m.values})
    xs = [float(v) for v in report.lead_values]
    for key in keys:
        report.slopes[key] = fit_slope(xs, report.values(*key))
    calc = report.scaling
    if calc is not None and report.widths:
        numbers = [calc.evaluate(at, report.lr) for at in report.widths]
        for q, subject, step in keys:
            if (q, subject) in calc:
                report.predicted_slopes[(q, subject, step)] = loglog_slope(
                    xs, [n[(q, subject)] for n in numbers])
        for note in calc.notes(report.widths):
            report.notes.append(note.message)
    if len(report.seeds) == 1 and len(report.widths) < 3:
        report.notes.append("One seed and two widths: the slopes have no uncertainty estimate, and every "
                            "check is judged with the bare tolerance of 0.1. Use --seeds 3 or more widths.")
    steps = sorted({st for _, _, st in keys if st > 0})
    report.checks = judge(
        report.slopes,
        targets=target_exponents(report.spec),
        scaling=calc,
        predicted=report.predicted_slopes,
        agreement_step=steps[0] if steps else 1,
        final_step=steps[-1] if steps else settings.steps,
        output_layer=_weight_layers(report.spec)[-1],
    )


def _weight_layers(spec: Spec) -> list[str]:
    return [layer.name for layer in spec.layers if layer.kind in ("linear", "embedding")]


@dataclass(frozen=True)
class _Structure:
    """Input and output of the model as the data generator needs them."""

    spec: Spec
    first: str
    last: str
    sparse: bool
    sequence: bool

    def _dim(self, layer: str, attr: str, at: Mapping[str, int]) -> int:
        expr = self.spec.layer(layer).attrs[attr]
        return int(sympy.sympify(expr).xreplace({self.spec.widths[k].symbol: v for k, v in at.items()}))

    def n_in(self, at: Mapping[str, int]) -> int:
        return self._dim(self.first, "fan_in", at)

    def n_out(self, at: Mapping[str, int]) -> int:
        return self._dim(self.last, "fan_out", at)

    def seq(self, length: int) -> int | None:
        return length if self.sequence else None


def _structure(spec: Spec, factory: Callable[..., nn.Module] | None) -> _Structure:
    from paramcalc.models import chain_problems, is_transformer

    weights = [layer for layer in spec.layers if layer.kind in ("linear", "embedding")]
    if not weights:
        raise SpecError([Problem("layers", "no linear or embedding layer to verify")], source=spec.source)
    first, last = weights[0], weights[-1]
    sparse = first.kind == "embedding" or first.attrs.get("input") == "sparse"
    chain = not chain_problems(spec)
    if not chain and factory is None and not is_transformer(spec):
        raise SpecError(
            [Problem("layers", "this spec is neither a chain of linear layers nor a transformer, so no "
                               "model can be built from it; pass --model module:function, a factory "
                               "returning your nn.Module at given widths")],
            source=spec.source,
        )
    return _Structure(spec, first.name, last.name, sparse, sequence=not chain and sparse)


def _check_settings(
    steps: int, widths: Sequence[int], batch: int, measure_steps: Sequence[int] | None
) -> None:
    problems = []
    if steps < 1:
        problems.append(Problem("--steps", f"expected at least 1 step, got {steps}"))
    if len(set(widths)) < 2:
        problems.append(Problem("--widths", "expected at least two different widths to fit a slope"))
    if batch < 1:
        problems.append(Problem("--batch", f"expected a positive batch size, got {batch}"))
    if measure_steps is not None and any(not 1 <= s <= steps for s in measure_steps):
        problems.append(Problem("measure_steps", f"steps to measure must lie in 1..{steps}"))
    if problems:
        raise SpecError(problems, source="command line")


def _does_not_fit(
    derivation: Derivation, at: Mapping[str, int], batch: int, optimizer: str, device: torch.device,
) -> str | None:
    from paramcalc.models import parameter_shapes

    shapes = parameter_shapes(derivation.spec, at)
    widths_sum = sum(s[0] for s in shapes.values())
    need = memory_needed(shapes, batch=batch, widths_sum=widths_sum, optimizer=optimizer)
    free = available_memory(device)
    if free is not None and need > free:
        return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {device.type}"
    return None


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

