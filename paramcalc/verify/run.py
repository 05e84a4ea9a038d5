"""``verify``: plan a run, train and measure at every width of the sweep, fit, judge; a :class:`Report`.

The pipeline for one parametrization and optimizer (config -> plan -> run -> present):

1. :class:`~paramcalc.verify.config.VerifyConfig`: what is asked for;
2. :func:`~paramcalc.verify.plan.plan`: the derivation, the calculus where the spec is a chain, the
   widths, seeds, batches, learning rate and the tensors without a gradient;
3. :func:`execute`: at each width of the sweep and each seed, build the model, apply the parametrization
   through the emitted code, train ``steps`` full-batch steps and measure
   (:mod:`paramcalc.verify.measure`); then fit a slope ``log quantity ~ p log n`` per quantity
   across widths (:mod:`paramcalc.verify.fit`) and judge it (:mod:`paramcalc.verify.judge`):
   against the calculus' finite-width slope (agreement) and against the exponent Desideratum 1,
   Condition 1 or TP5 Definition 4.1 asks for (target);
4. :mod:`paramcalc.verify.present` and :mod:`paramcalc.verify.plot` draw the report.

A width whose run needs more memory than the device has free is skipped with a message; a run whose
loss or features stop being finite is a divergence, reported as a finding and a failure.

Transformers have no calculus (:func:`paramcalc.engine.calculus.local_scaling` predicts ``||W||_*``
at init only), so they are judged on the paper's targets alone
(:func:`paramcalc.engine.calculus.target_exponents`): every projection's output, every norm's output
and the residual stream at its input with RMS and change Theta(1) (Desideratum 1); every tensor and
tied use by Condition 1 in natural norms; each attention layer's logits Theta(1) (TP5 Definition
4.1); the output's own update ``dW h`` Theta(1) and its whole change not growing (Sec. 4, Eq. 5).
Their defaults (two sequences of two tokens, six seeds, float64) put them in the regime the theory
describes, the first steps at a fixed batch (Assumption 4) with updates of low rank; docs/verify.md
has the measurements behind these numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from paramcalc.engine.calculus import target_exponents
from paramcalc.spec import Spec
from paramcalc.verify import model as model_module
from paramcalc.verify.config import DEFAULT_WIDTHS, Progress, VerifyConfig
from paramcalc.verify.fit import fit_slope, loglog_slope
from paramcalc.verify.judge import judge
from paramcalc.verify.measure import Measurement, measure_width
from paramcalc.verify.plan import VerifyPlan, plan, resolve_device
from paramcalc.verify.report import Report
from paramcalc.verify.widths import attention_heads

__all__ = ["DEFAULT_WIDTHS", "Report", "execute", "resolve_device", "verify"]


def verify(
    spec: Spec | Mapping[str, Any] | str,
    parametrization: str | None = None,
    optimizer: str | None = None,
    *,
    config: VerifyConfig | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> Report:
    """Verify ``parametrization`` x ``optimizer`` on ``spec`` across widths: plan, then run.

    Either ``config`` or the keywords of :class:`~paramcalc.verify.config.VerifyConfig` (``widths``,
    ``steps``, ``seeds``, ``lr``, ``model``, ...), from which the config is built. ``progress`` is
    called before each width. Raises :class:`~paramcalc.SpecError` on bad input.

    >>> report = verify("examples/mlp.yaml", "mup", "adam", widths=[32, 64], seeds=1)  # doctest: +SKIP
    >>> report.passed, report.exit_code                                                 # doctest: +SKIP
    """
    if config is None:
        named = {k: v for k, v in (("parametrization", parametrization), ("optimizer", optimizer))
                 if v is not None}
        config = VerifyConfig(**named, **options)
    elif options or parametrization is not None or optimizer is not None:
        raise TypeError("verify() takes either config= or the config's keywords, not both")
    return execute(plan(spec, config), progress)


def execute(the_plan: VerifyPlan, progress: Progress | None = None) -> Report:
    """Execute a plan: every width and seed, then the slopes and the checks."""
    p = the_plan
    measurements, done, skipped = _sweep(p, progress)
    notes = [*p.notes, *_run_notes(p, measurements, done)]
    report = Report(
        spec=p.spec, parametrization=p.derivation.parametrization, optimizer=p.derivation.optimizer.name,
        form=p.derivation.form, loss=p.loss, data=p.config.data, lr=p.lr, lr_auto=p.lr_auto,
        steps=p.config.steps, batch=p.batch, seeds=list(p.seeds), device=str(p.device), lead=p.lead,
        widths=done, measurements=measurements, scaling=p.scaling, slopes={}, predicted_slopes={}, checks=[],
        notes=notes, findings=_findings(p, measurements, done), skipped=skipped,
        emitted=any(m.emitted for m in measurements), centered=p.config.center, seq=p.seq,
        excluded=dict(p.excluded), zero_gradients=dict(p.zero_gradients), calibration=p.calibration,
        dtype=p.dtype,
    )
    _fit_and_judge(report, p.settings.steps)
    return report


def _sweep(
    p: VerifyPlan, progress: Progress | None
) -> tuple[list[Measurement], list[dict[str, int]], list[str]]:
    """Every seed at every width that fits: the measurements, the widths measured, the skipped."""
    measurements: list[Measurement] = []
    done: list[dict[str, int]] = []
    skipped: list[str] = []
    for index, at in enumerate(p.widths):
        if progress is not None:
            progress(index, len(p.widths), at)
        reason = model_module.does_not_fit(p.derivation, at, p.batch, p.config.optimizer, p.device)
        if reason:
            skipped.append(f"{p.lead} = {at[p.lead]} skipped: {reason}")
            continue
        try:
            runs = [measure_width(p.derivation, at, seed, p.batches[seed], p.settings, factory=p.factory,
                                  device=p.device) for seed in p.seeds]
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            skipped.append(f"{p.lead} = {at[p.lead]} skipped: out of memory on {p.device.type}")
            _free(p.device)
            continue
        measurements.extend(runs)
        done.append(at)
    if progress is not None:
        progress(len(p.widths), len(p.widths), p.widths[-1])
    return measurements, done, skipped


def _findings(
    p: VerifyPlan, measurements: Sequence[Measurement], done: Sequence[Mapping[str, int]]
) -> list[str]:
    """What fails a run whatever the slopes say: divergence, too few widths."""
    findings = []
    diverged = [m for m in measurements if m.diverged_at is not None]
    if diverged:
        by_width: dict[int, list[Measurement]] = {}
        for m in diverged:
            by_width.setdefault(m.widths[p.lead], []).append(m)
        parts = [f"{p.lead} = {w} at step {min(m.diverged_at for m in ms)} "  # type: ignore[type-var]
                 f"({len(ms)}/{len(p.seeds)} seeds)" for w, ms in sorted(by_width.items())]
        findings.append("training diverged (loss or features not finite): " + ", ".join(parts))
    if len(done) < 2:
        findings.append(f"fewer than two widths could be measured ({len(done)}); no slope to fit")
    return findings


def _run_notes(
    p: VerifyPlan, measurements: Sequence[Measurement], done: Sequence[Mapping[str, int]]
) -> list[str]:
    """What the measurements say about themselves: unscaled attention, rounding, single heads."""
    notes = []
    unscaled = sorted({layer for m in measurements for layer in m.unscaled})
    if unscaled:
        notes.append("Attention layers without a `scale` attribute keep their own logit scale, not the "
                     f"derivation's: {', '.join(unscaled)}.")
    rounded = _rounding_note(p, measurements)
    if rounded:
        notes.append(rounded)
    single = [layer for layer, heads in p.settings.logit_group.items() if heads == 1]
    if (single and p.config.optimizer == "sgd" and done
            and any(h > 1 for h in attention_heads(p.spec, done[-1]).values())):
        notes.append(f"At {p.lead} = {done[0][p.lead]} the attention has a single head (d_head = "
                     f"{p.lead}), a structure of its own: on examples/gpt.yaml the first block's query "
                     "gradient is then 2.2 times larger, relative to the value and MLP gradients, than with "
                     "2 or more heads (whether from a wider model or a smaller d_head), which SGD's update "
                     "inherits (Adam's sign does not). Slopes that start there mix it in; sweep from the "
                     "width with two heads to leave it out.")
    recorded = {s for m in measurements for q, s, _ in m.values if q == "rms_logits"}
    unrecorded = [layer.name for layer in p.spec.layers if layer.kind == "attention"
                  and measurements and layer.name not in recorded]
    if unrecorded:
        notes.append("Attention logits not measured (the module has no `record_logits` / `last_logits`): "
                     + ", ".join(unrecorded) + ".")
    return notes


def _rounding_note(p: VerifyPlan, measurements: Sequence[Measurement]) -> str | None:
    rounded: dict[str, set[int]] = {}
    for m in measurements:
        for name in m.rounded:
            if name not in p.excluded:
                rounded.setdefault(name, set()).add(m.widths[p.lead])
    if not rounded:
        return None
    listed = "; ".join(f"{name} ({p.lead} = {', '.join(map(str, sorted(ws)))})"
                       for name, ws in sorted(rounded.items())[:8])
    more = f" and {len(rounded) - 8} more" if len(rounded) > 8 else ""
    return (f"Most of the first update of these tensors was lost to {p.dtype} rounding (below the "
            f"weights' resolution), so their update quantities measure rounding: {listed}{more}."
            + (" Rerun with --dtype float64." if p.dtype == "float32" else ""))


def _fit_and_judge(report: Report, steps_trained: int) -> None:
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
    steps = sorted({st for _, _, st in keys if st > 0})
    output = report.spec.weight_layers[-1].name
    # Without a calculus to place the crossover of the output's two terms, its whole change is
    # judged from above and its own update's term both ways (paramcalc.verify.judge).
    upper = set() if report.predicted else {("rms_dh", output)}
    report.checks = judge(
        report.slopes,
        targets=target_exponents(report.spec),
        scaling=calc,
        predicted=report.predicted_slopes,
        steps=(steps[0] if steps else 1, steps[-1] if steps else steps_trained),
        output_layer=output,
        excluded=report.excluded,
        upper=upper,
    )
    from paramcalc.verify.evidence import weigh

    report.checks = weigh(report.checks, report.lead, report.lead_values, len(report.seeds))


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
