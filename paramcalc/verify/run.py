"""``verify``: sweep widths, measure, fit, judge; the :class:`Report` it returns.

The pipeline for one parametrization and optimizer:

1. derive the parametrization (:func:`paramcalc.engine`), and run the first-step calculus on it
   (:func:`paramcalc.engine.calculus.scaling`) when the spec is a chain;
2. choose the global learning rate: given, or ``auto``, the one whose predicted first step changes
   the output by RMS 0.1 at the spec's base widths (where hyperparameters are tuned): every
   parametrization then makes the same progress at the base width and differs only in how it
   scales away from it. Where the calculus does not reach (not a chain), probe steps at the
   smallest width of the sweep find the lr whose first step moves the most-moving hidden feature
   by 10% of its RMS (:func:`paramcalc.verify.probe.calibrate_lr`);
3. where the spec is not a chain, find the tensors that get no gradient at all (a float64 probe,
   :func:`paramcalc.verify.probe.zero_gradient`): their updates are reported, not judged;
4. at each width of the sweep and each seed: build the model, apply the parametrization through
   the emitted code, train ``steps`` full-batch steps and measure (:mod:`paramcalc.verify.measure`);
5. fit a slope per quantity across widths and judge it (:mod:`paramcalc.verify.judge`).

A width whose run needs more memory than the device has free is skipped with a message; a run whose
loss or features stop being finite is a divergence, reported as a finding and a failure.

Transformers. There is no calculus for them (:func:`paramcalc.engine.calculus.local_scaling`
predicts ``||W||_*`` at init only), so they are judged on the paper's targets alone
(:func:`paramcalc.engine.calculus.target_exponents`): every projection's output, every norm's output
and the residual stream at its input, with RMS and change Theta(1) (Desideratum 1); every tensor and
tied use by Condition 1 in natural norms; each attention layer's logits Theta(1) (TP5 Definition
4.1); the output's own update ``dW h`` Theta(1) and its whole change not growing (Sec. 4, Eq. 5;
see :mod:`paramcalc.verify.judge`). Their defaults put them in the regime the theory describes,
the first steps at a batch size fixed as width grows (Assumption 4) with updates of low rank:

- data: synthetic token sequences, next-token cross-entropy on the centered logits (the first
  step's loss gradient is then the same at every width, :mod:`paramcalc.verify.data`);
- few tokens: :data:`SEQ_BATCH` sequences of :data:`SEQ_LEN` tokens. Two finite-sample effects
  pull in opposite directions, and both were measured on ``examples/gpt.yaml`` under muP with Adam
  (d_model 64..512, so 1..8 heads of 64):

  * the constant of Adam's query and key updates drifts with the number of query tokens (the
    first token of a sequence attends only to itself, so ``B (T - 1)`` tokens carry the
    attention's gradient). Adam's first update is ``lr sign(G)``, and a gradient summed over ``r``
    tokens has rank up to ``r``; the sign of a rank-``r`` matrix with ``r`` comparable directions
    has spectral norm about ``sqrt(2/pi) sqrt(m n / r)`` (its linear part) above a random bulk of
    size ``sqrt(m) + sqrt(n)``. With heads scaling with width and ``d_head`` fixed, each head's
    gradient is dominated by one or two tokens, different from head to head, so the effective rank
    of ``G_q`` grows with the number of heads until it reaches the number of query tokens, and
    ``||dW_q||_*`` loses that much of its constant on the way: a finite-width drift of the
    constant, not of the exponent (with one sequence of 4 tokens, the stable rank of
    ``sign(G_q)`` goes 1.6 -> 2.9 and ``||sign(G_q)||_* / d_model`` 0.80 -> 0.59 from 1 to 8
    heads). The slopes of ``||dW_q||_*``, ``||dW_k||_*`` over 3 steps: 0.00 +- 0.01 with one query
    token (``G_q``, ``G_k`` exactly rank one, Claim 2's batch of one), -0.02 to -0.07 (worst -0.11)
    with two, -0.11 (worst -0.18, beyond the judge's 0.1) with four;
  * the attention logits' noise falls with the number of independent sequences: a head holds
    ``B T (T + 1) / 2`` logits, and in deep blocks at init the tokens of a sequence are nearly
    parallel (cosine 0.8-0.97 between the two streams), so one sequence gives about one
    independent logit per head, and one head at the smallest width. With one sequence the logit
    slopes scatter by +-0.3 from layer to layer without bias (means over 12 layers and 6 seeds
    +0.01, +0.03), but a few seeds sometimes agree by chance on such a scatter: 3 of 7 verify runs
    (3 or 6 seeds, float32) failed a logit check; with two sequences 1 of 7 did.

  Hence two sequences of two tokens. ``B T`` = 4 also stays far below the smallest width, where
  sign matrices of rank ``r`` are aligned (``n / sqrt(r) >> sqrt(n)``), as the paper's Sec. 3.2.3
  and App. B assume;
- seeds: :data:`SEQ_SEEDS`. Few tokens make some quantities heavy-tailed from seed to seed: a
  query's gradient is proportional to ``g . (v_0 - v_1)``, a projection of two random vectors (the
  log of ``|N(0, 1)|`` has a standard deviation of 1.1), so under SGD the slope of
  ``||dW_q||_*`` scatters by +-0.35 from seed to seed, and the logits' slopes by +-0.3. The judge's
  interval rests on the seeds' standard error; with 3 seeds it has 2 degrees of freedom, and 3
  seeds that happen to agree make it small. Measured on ``examples/gpt.yaml``: under muP with SGD,
  seeds 0-2 agreed on -0.38 +- 0.01 for ``||dW_q||_*`` of the first block and failed it, while six
  seeds of another draw gave +0.41, -0.21, -0.18, +0.55, +0.24, +0.67 (+0.25 +- 0.15, passing);
  under muP with Adam, one of five 3-seed runs failed a deep block's logit change (its seeds
  agreeing on +0.41). With 6 seeds, muP and spectral pass under both optimizers and SP fails;
- float64 (:data:`DTYPES`): some first updates are below float32's resolution of their weights.

With these defaults a verify of ``examples/gpt.yaml`` at ``d_model`` = 64..512 takes 55 s (SGD) to
75 s (Adam) on two CPU cores.
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
from paramcalc.engine import Derivation
from paramcalc.engine.calculus import (
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
from paramcalc.verify.probe import Calibration, calibrate_lr, zero_gradient, zero_gradient_reason

__all__ = ["DEFAULT_WIDTHS", "FiniteWidthNote", "Report", "resolve_device", "verify"]

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
#: The predicted first-step RMS change of the output that ``lr="auto"`` aims for at base widths.
AUTO_OUTPUT_CHANGE = 0.1
#: Without a calculus: the measured first-step change, relative to its RMS, of the hidden feature
#: that moves most, that ``lr="auto"`` aims for at the smallest width (paramcalc.verify.probe).
AUTO_FEATURE_CHANGE = 0.1
#: Examples in a chain's batch (the default ``batch``), and its seeds.
BATCH = 32
SEEDS = 3
#: Sequences per batch, tokens per sequence and seeds for sequence models (see the module docstring).
SEQ_BATCH = 2
SEQ_LEN = 2
SEQ_SEEDS = 6
#: Widths at which :func:`~paramcalc.verify.probe.zero_gradient` looks for tensors without a gradient.
ZERO_PROBE_WIDTHS = 2
#: Floating-point types a verify run can train in. A chain defaults to float32 (its first updates
#: are far above float32's resolution); anything else to float64: in a transformer the first
#: updates of some tensors are tiny next to their weights, e.g. the queries' and keys' of
#: ``examples/gpt.yaml`` under spectral with SGD (attention scale ``1/d_head``, so their gradients
#: are 8 times smaller than muP's), about ``1e-7`` in spectral norm at the calibrated lr, whose
#: entries float32 rounds away at ``d_model = 512`` (their measured updates then fell like
#: ``n^-0.7``; in float64, ``n^+0.3 .. +0.7`` within their seed spread). Every run checks for this
#: (``Measurement.rounded``) and says so in the notes.
DTYPES = {"float32": torch.float32, "float64": torch.float64}

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
    #: Tokens per sequence for sequence models (``None``: one input per example).
    seq: int | None = None
    #: Tensors without a gradient (float64 probe), with the reason: their updates are not judged.
    excluded: dict[str, str] = field(default_factory=dict)
    #: The float64 probe's gradient norm of each excluded tensor, relative to the largest tensor's.
    zero_gradients: dict[str, float] = field(default_factory=dict)
    #: How ``lr`` was chosen when it was calibrated by probe steps (no calculus).
    calibration: Calibration | None = None
    #: The models' floating-point type.
    dtype: str = "float32"

    @property
    def predicted(self) -> bool:
        """Whether the first-step calculus covers the architecture (a chain)."""
        return self.scaling is not None and self.scaling.loss != "local"

    @property
    def lr_source(self) -> str:
        """How the learning rate was chosen, in words (the report's footer)."""
        if not self.lr_auto:
            return "lr given"
        if self.calibration is not None:
            return self.calibration.describe(self.lead)
        return (f"lr from the calculus: its predicted first step changes the output by RMS "
                f"{AUTO_OUTPUT_CHANGE:g} at the spec's base widths")

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
            agree = ("the measurements agree with the calculus." if self.predicted else
                     "no prediction for this architecture beyond ||W||_* at init: judged on the "
                     "paper's targets alone" + (", attention logits included." if self._attention
                                                  else "."))
            return (f"{head}: PASS. Features and their updates keep RMS Theta(1) (Desideratum 1) and "
                    f"||W||_*, ||dW||_* scale like sqrt(fan_out/fan_in) (Condition 1) across "
                    f"{self.lead} = {self.widths[0][self.lead]}..{self.widths[-1][self.lead]}; {agree}")
        parts = []
        targets = [c for c in self.failures if c.kind == "target"]
        agreements = [c for c in self.failures if c.kind == "agreement"]
        if len(targets) <= 6:
            if targets:
                parts.append("fails the paper's conditions: " + "; ".join(c.message for c in targets))
        else:  # many layers: per quantity, how many fail and the worst few
            groups: dict[tuple[str, int], list[Check]] = {}
            for c in targets:
                groups.setdefault((c.quantity, c.step), []).append(c)
            lines = []
            for (quantity, step), cs in groups.items():
                cs.sort(key=lambda c: -abs(c.corrected - float(c.target or 0)))
                where = "at init" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"
                info = QUANTITIES.get(quantity)
                title = info.title if info is not None else quantity
                noun = "tensor" if info is not None and info.subject == "tensor" else "layer"
                if len({c.target for c in cs}) == 1:
                    worst = ", ".join(f"{c.subject} n^{c.corrected:+.2f}" for c in cs[:3])
                    asks = f"asks n^{cs[0].target}; worst {worst}"
                else:
                    asks = "worst " + ", ".join(f"{c.subject} n^{c.corrected:+.2f} for n^{c.target}"
                                                for c in cs[:3])
                lines.append(f"{title} {where} at {len(cs)} {noun}{'s' if len(cs) > 1 else ''} ({asks})")
            parts.append(f"fails the paper's conditions in {len(targets)} checks: " + "; ".join(lines))
        if agreements:
            parts.append("MEASUREMENT AND PREDICTION DISAGREE, a bug somewhere: "
                         + "; ".join(c.message for c in agreements[:4]))
        parts.extend(self.findings)
        if not self.checks:
            parts.append("nothing could be checked")
        return f"{head}: FAIL. " + " ".join(p[0].upper() + p[1:] + "." for p in parts)

    @property
    def _attention(self) -> bool:
        return any(q == "rms_logits" for q, _, _ in self.slopes)

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
            "lr_source": self.lr_source,
            "lr_calibration": None if self.calibration is None else {
                "widths": self.calibration.widths, "target_feature_change": self.calibration.target,
                "feature": self.calibration.feature,
                "probes": [{"lr": num(lr), "feature_change": num(c), "output_change": num(o)}
                           for lr, c, o in self.calibration.probes],
            },
            "predictions": ("first-step calculus" if self.predicted else
                            "none for this architecture beyond ||W||_* at init; judged on targets"),
            "steps": self.steps,
            "batch": self.batch,
            "seq": self.seq,
            "dtype": self.dtype,
            "seeds": self.seeds,
            "device": self.device,
            "emitted_code": self.emitted,
            "sweep": {"width": self.lead, "values": self.lead_values, "widths": self.widths},
            "passed": self.passed,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "findings": self.findings,
            "skipped": self.skipped,
            "excluded": [{"tensor": name, "reason": reason,
                          "relative_gradient": float(f"{self.zero_gradients.get(name, 0.0):.3g}")}
                         for name, reason in self.excluded.items()],
            "notes": self.notes,
            "checks": [
                {
                    "kind": c.kind, "quantity": c.quantity, "subject": c.subject, "step": c.step,
                    "measured": num(c.measured.value), "stderr": num(c.measured.stderr),
                    "predicted": num(c.predicted), "exponent": exp(c.exponent), "target": exp(c.target),
                    "offset": num(c.offset), "passed": c.passed, "message": c.message,
                    "bound": "upper" if c.upper else "two-sided",
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
    seeds: int | Sequence[int] | None = None,
    batch: int | None = None,
    data: str = "synthetic",
    loss: str | None = None,
    lr: float | None = None,
    device: str = "auto",
    model: str | Callable[[dict[str, int]], nn.Module] | None = None,
    measure_steps: Sequence[int] | None = None,
    progress: Progress | None = None,
    seq: int | None = None,
    center: bool = True,
    dtype: str | None = None,
) -> Report:
    """Verify ``parametrization`` x ``optimizer`` on ``spec`` across ``widths`` (see the module docstring).

    ``widths`` are values of the spec's first scaling width; ``seeds`` a count or a list;
    ``lr`` the global learning rate (``None``: auto); ``model`` a factory ``module:function`` (or a
    callable) returning the model at given widths, required when the spec is not a chain or a
    transformer :func:`paramcalc.models.build_model` understands. ``batch``, ``loss`` and ``seq``
    default by family: a chain trains on :data:`BATCH` examples with the MSE; a sequence model on
    :data:`SEQ_BATCH` sequences of :data:`SEQ_LEN` tokens with next-token cross-entropy. ``dtype``
    (``float32`` or ``float64``) defaults to float32 for a chain and float64 otherwise (see
    :data:`DTYPES`). Raises :class:`~paramcalc.SpecError` on bad input.

    >>> report = verify("examples/mlp.yaml", "mup", "adam", widths=[32, 64], seeds=1)  # doctest: +SKIP
    >>> report.passed, report.exit_code                                                 # doctest: +SKIP
    """
    loaded = paramcalc.load_spec(spec)  # type: ignore[arg-type]
    factory = load_factory(model) if isinstance(model, str) else model
    structure = _structure(loaded, factory)
    if structure.sequence:
        batch = SEQ_BATCH if batch is None else batch
        seq = SEQ_LEN if seq is None else seq
        loss = "ce" if loss is None else loss
        seeds = SEQ_SEEDS if seeds is None else seeds
    else:
        batch = BATCH if batch is None else batch
        loss = "mse" if loss is None else loss
        seeds = SEEDS if seeds is None else seeds
    _check_settings(steps, widths, batch, measure_steps, seq if structure.sequence else None,
                    structure.positions)
    if dtype is not None and dtype not in DTYPES:
        raise SpecError([Problem("--dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")],
                        source="command line")
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

    calc: Scaling | None = None
    notes: list[str] = []
    chain = True
    try:
        calc = scaling(derivation, loss, centered=center)
    except NotAChain as exc:
        chain = False
        calc = local_scaling(derivation)
        notes.append(f"No prediction for this architecture: the first-step calculus propagates through "
                     f"chains only ({exc}). Predicted here, tensor by tensor: ||W||_* at init (and its "
                     "finite-width offset); features, updates and attention logits are judged against "
                     "Desideratum 1, Condition 1 and TP5 Def. 4.1 directly.")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise SpecError([Problem("--lr", f"expected a positive learning rate, got {lr}")],
                        source="command line")

    dtype = dtype or ("float32" if chain else "float64")
    torch_dtype = DTYPES[dtype]
    batches: dict[int, Batch] = {}

    def batch_for(seed: int, at: Mapping[str, int]) -> Batch:
        if seed not in batches:
            batches[seed] = make_batch(data=data, loss=loss, batch=batch, seed=seed,  # type: ignore[arg-type]
                                       n_in=structure.n_in(at), n_out=structure.n_out(at),
                                       sparse=structure.sparse, seq=structure.seq(seq))
        return batches[seed]

    fitting = [at for at in sweep_widths if not _does_not_fit(derivation, at, batch, optimizer, dev)]
    lr_auto = lr is None
    calibration: Calibration | None = None
    if lr is None:
        if chain:
            lr = calc.calibrate_lr(None, AUTO_OUTPUT_CHANGE)
        elif fitting:
            at = fitting[0]
            try:
                probe_batches = {s: batch_for(s, at) for s in seed_list}
                calibration = calibrate_lr(derivation, at, probe_batches, optimizer,
                                           target=AUTO_FEATURE_CHANGE, centered=center, factory=factory,
                                           device=dev, dtype=torch_dtype)
            except ValueError as exc:
                raise SpecError([Problem("--lr", f"no learning rate could be calibrated ({exc}); give --lr")],
                                source="command line") from None
            lr = calibration.lr
        else:
            lr = 1.0  # nothing fits: every width is skipped below
    zero: dict[str, float] = {}
    if fitting and not chain:  # a chain's tensors all get a gradient; attention's key bias does not
        zero = zero_gradient(derivation, fitting[:ZERO_PROBE_WIDTHS], batch_for(seed_list[0], fitting[0]),
                             centered=center, factory=factory, device=dev, seed=seed_list[0])
    excluded = {name: zero_gradient_reason(derivation, name) for name in zero}
    settings = RunSettings(optimizer, float(lr), steps,
                           frozenset(measure_steps) if measure_steps is not None else None, centered=center,
                           structured=not chain, logit_group=_heads(loaded, sweep_widths[0]),
                           dtype=torch_dtype)

    measurements: list[Measurement] = []
    skipped: list[str] = []
    findings: list[str] = []
    done_widths: list[dict[str, int]] = []
    for index, at in enumerate(sweep_widths):
        if progress is not None:
            progress(index, len(sweep_widths), at)
        reason = _does_not_fit(derivation, at, batch, optimizer, dev)
        if reason:
            skipped.append(f"{lead} = {at[lead]} skipped: {reason}")
            continue
        try:
            runs = [measure_width(derivation, at, seed, batch_for(seed, at), settings, factory=factory,
                                  device=dev) for seed in seed_list]
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
    unscaled = sorted({layer for m in measurements for layer in m.unscaled})
    if unscaled:
        notes.append("Attention layers without a `scale` attribute keep their own logit scale, not the "
                     f"derivation's: {', '.join(unscaled)}.")
    rounded: dict[str, set[int]] = {}
    for m in measurements:
        for name in m.rounded:
            if name not in excluded:
                rounded.setdefault(name, set()).add(m.widths[lead])
    if rounded:
        listed = "; ".join(f"{name} ({lead} = {', '.join(map(str, sorted(ws)))})"
                           for name, ws in sorted(rounded.items())[:8])
        more = f" and {len(rounded) - 8} more" if len(rounded) > 8 else ""
        notes.append(f"Most of the first update of these tensors was lost to {dtype} rounding (below the "
                     f"weights' resolution), so their update quantities measure rounding: {listed}{more}."
                     + (" Rerun with --dtype float64." if dtype == "float32" else ""))
    single = [layer for layer, heads in settings.logit_group.items() if heads == 1]
    if (single and optimizer == "sgd" and done_widths
            and any(h > 1 for h in _heads(loaded, done_widths[-1]).values())):
        notes.append(f"At {lead} = {done_widths[0][lead]} the attention has a single head (d_head = "
                     f"{lead}), a structure of its own: on examples/gpt.yaml the first block's query "
                     "gradient is then 2.2 times larger, relative to the value and MLP gradients, than with "
                     "2 or more heads (whether from a wider model or a smaller d_head), which SGD's update "
                     "inherits (Adam's sign does not). Slopes that start there mix it in; sweep from the "
                     "width with two heads to leave it out.")
    recorded = {s for m in measurements for q, s, _ in m.values if q == "rms_logits"}
    unrecorded = [layer.name for layer in loaded.layers if layer.kind == "attention"
                  and measurements and layer.name not in recorded]
    if unrecorded:
        notes.append("Attention logits not measured (the module has no `record_logits` / `last_logits`): "
                     + ", ".join(unrecorded) + ".")

    report = Report(
        spec=loaded, parametrization=derivation.parametrization, optimizer=derivation.optimizer.name,
        form=derivation.form, loss=loss, data=data, lr=float(lr), lr_auto=lr_auto, steps=steps,
        batch=batch, seeds=seed_list, device=str(dev), lead=lead, widths=done_widths,
        measurements=measurements, scaling=calc, slopes={}, predicted_slopes={}, checks=[],
        notes=notes, findings=findings, skipped=skipped,
        emitted=any(m.emitted for m in measurements), centered=center,
        seq=structure.seq(seq), excluded=excluded, zero_gradients=zero, calibration=calibration,
        dtype=dtype,
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
    output = report.spec.weight_layers[-1].name
    # Without a calculus to place the crossover of the output's two terms, its whole change is
    # judged from above and its own update's term both ways (paramcalc.verify.judge).
    upper = set() if report.predicted else {("rms_dh", output)}
    report.checks = judge(
        report.slopes,
        targets=target_exponents(report.spec),
        scaling=calc,
        predicted=report.predicted_slopes,
        agreement_step=steps[0] if steps else 1,
        final_step=steps[-1] if steps else settings.steps,
        output_layer=output,
        excluded=report.excluded,
        upper=upper,
    )


def _heads(spec: Spec, at: Mapping[str, int]) -> dict[str, int]:
    """Heads of each attention layer at ``at`` (the logits' group size, paramcalc.verify.measure)."""
    subs = {spec.widths[k].symbol: v for k, v in at.items()}
    return {layer.name: int(sympy.sympify(layer.attrs["n_heads"]).xreplace(subs))
            for layer in spec.layers if layer.kind == "attention"}


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

    def seq(self, length: int | None) -> int | None:
        return length if self.sequence else None

    @property
    def positions(self) -> int | None:
        """The position embedding's size, the longest sequence a transformer reads (None: none)."""
        top = [layer for layer in self.spec.layers if "block" not in layer.attrs]
        if not self.sequence or len(top) < 2 or top[0].kind != "embedding" or top[1].kind != "embedding":
            return None
        expr = sympy.sympify(top[1].attrs["fan_in"]).xreplace(self.spec.base_values)
        return int(expr) if expr.is_Integer else None


def _structure(spec: Spec, factory: Callable[..., nn.Module] | None) -> _Structure:
    from paramcalc.models import chain_problems, is_transformer

    weights = spec.weight_layers
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
    steps: int, widths: Sequence[int], batch: int, measure_steps: Sequence[int] | None,
    seq: int | None = None, positions: int | None = None,
) -> None:
    problems = []
    if seq is not None and seq < 1:
        problems.append(Problem("--seq", f"expected a positive sequence length, got {seq}"))
    elif seq is not None and positions is not None and seq > positions:
        problems.append(Problem("--seq", f"the model has {positions} positions; got sequences of {seq}"))
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

