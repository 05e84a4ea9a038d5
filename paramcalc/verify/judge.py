"""Slopes across widths, and the verdict: do measurements meet the paper's conditions and the calculus?

Every measured quantity is fit as a power of the sweep width ``n`` (the spec's first scaling width;
:mod:`paramcalc.verify.fit`).

Two kinds of check, each on one quantity of one layer or tensor:

agreement
    the measured slope against the calculus' prediction *at the measured widths*: the slope of its
    finite-width numbers (:func:`paramcalc.verify.fit.predicted_slope`), fit the same way. The
    calculus is a first-step calculus, so update quantities are compared after the first measured
    step. A disagreement means a bug somewhere (calculus, derivation, emitted code or model).
target
    the measured slope against the exponent Desideratum 1 (RMS of hidden features and of their
    change Theta(1): exponent 0; the output's change too, Sec. 4) or Condition 1 (``||W||_*``,
    ``||dW||_*`` like ``sqrt(fan_out / d_in)``) asks for, after the last step.

Where no calculus covers the architecture (a transformer), only the ``||W||_*`` at init has a
prediction, and the rest is judged on targets alone. Two refinements keep that honest:

excluded tensors
    a tensor that gets no gradient at all (its gradient is zero to rounding in float64, at every
    probed width: a key bias, whose ``q . b_k`` softmax ignores) has no update to judge; its
    measured update is rounding noise (which Adam even normalises to size ``lr``). Its update
    quantities are reported with the reason and not judged.
one-sided checks
    the output's change is the sum of its own update's term ``dW_L h`` (Eq. 9-10: Theta(1) is the
    lower bound) and ``W_L dh``. Under muP the readout's entries are ``~ 1/n`` and ``dh`` does not
    line up with its rows at init, so each output of ``W_L dh`` sums ``n`` terms of random sign and
    vanishes like ``n^-1/2``. Where that term still dominates at the measured widths (a tied
    readout: docs/verify.md), the sum's slope lies between -1/2 and 0, a crossover only a calculus
    could correct for. So
    ``dW_L h`` is judged against exponent 0 and the whole change only from above (Eq. 5: it must
    not blow up).

Both are asymptotic statements checked at finite widths. Where the calculus says the measured range
is not yet asymptotic (its finite-width slope differs from its Theta-exponent by ``offset``, e.g. the
paper's first layer while ``n < n_0 = 3072``, where ``||W_1||_* ~ sigma_1 (sqrt(n) + sqrt(n_0))``), the
target check uses the measured slope minus that offset and says so; the agreement check is what
makes the correction trustworthy. A check passes within ``tolerance`` (0.1) plus the half-width of
the slope's 95% interval (Student's t with the seeds' degrees of freedom: few seeds, wide interval).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import sympy

from paramcalc.engine.calculus import QUANTITIES, Scaling
from paramcalc.verify.fit import Slope, fit_slope

__all__ = ["TOLERANCE", "Check", "Slope", "fit_slope", "judge"]

#: Largest slope difference still counted as agreement (and as meeting a target).
TOLERANCE = 0.1
#: A finite-width offset smaller than this is not worth correcting for.
ASYMPTOTIC = 0.05


@dataclass(frozen=True)
class Check:
    """One verdict on one quantity of one layer or tensor (see the module docstring)."""

    kind: Literal["agreement", "target"]
    quantity: str
    subject: str
    step: int
    measured: Slope
    predicted: float | None  # the calculus' finite-width slope at the measured widths
    exponent: sympy.Rational | None  # the calculus' Theta-exponent
    target: sympy.Rational | None
    offset: float
    passed: bool
    message: str
    upper: bool = False  # judged from above only: the slope must not exceed the target
    #: Why a passing check is not evidence enough (too few widths, too narrow a span, too wide an
    #: allowance: :mod:`paramcalc.verify.evidence`); empty when it is.
    evidence: str = ""

    @property
    def verdict(self) -> Literal["pass", "fail", "inconclusive"]:
        if not self.passed:
            return "fail"
        return "inconclusive" if self.evidence else "pass"

    @property
    def title(self) -> str:
        return QUANTITIES[self.quantity].title if self.quantity in QUANTITIES else self.quantity

    @property
    def corrected(self) -> float:
        """The measured slope minus the finite-width offset, where one is applied."""
        return self.measured.value - (self.offset if abs(self.offset) > ASYMPTOTIC else 0.0)


def _fmt(x: float | sympy.Rational | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, sympy.Basic):
        return str(x)
    return f"{x:+.2f}"


def judge(
    slopes: Mapping[tuple[str, str, int], Slope],
    *,
    targets: Mapping[tuple[str, str], sympy.Rational],
    scaling: Scaling | None,
    predicted: Mapping[tuple[str, str, int], float],
    steps: tuple[int, int],
    output_layer: str | None = None,
    excluded: Mapping[str, str] | None = None,
    upper: Collection[tuple[str, str]] = (),
) -> list[Check]:
    """Agreement and target checks for every quantity that has a prediction or a target.

    ``steps`` are the step the agreement checks look at (the first measured: the calculus is a
    first-step calculus) and the one the target checks look at (the last).
    ``slopes`` and ``predicted`` are keyed by ``(quantity, subject, step)``, ``targets`` by
    ``(quantity, subject)``; ``output_layer`` names the last weight layer (its change is judged by
    Sec. 4, not Desideratum 1). ``excluded`` maps tensors without a gradient to the reason: their
    update quantities get no check. ``upper`` lists ``(quantity, subject)`` judged from above only.
    """
    checks: list[Check] = []
    agreement_step, final_step = steps
    excluded = excluded or {}
    subjects = sorted({(q, s) for q, s, _ in slopes}, key=lambda k: (_order(k[0]), k[1]))
    for quantity, subject in subjects:
        info = QUANTITIES.get(quantity)
        init = info is not None and info.step == "init"
        if subject in excluded and not init:
            continue
        exponent = None
        if scaling is not None and (quantity, subject) in scaling:
            exponent = scaling.exponent(quantity, subject)
        # Agreement: the first-step calculus against the first measured step.
        step = 0 if init else agreement_step
        slope = slopes.get((quantity, subject, step))
        pred = predicted.get((quantity, subject, step))
        agreement_checked = quantity in _AGREEMENT
        if slope is not None and pred is not None and math.isfinite(pred) and agreement_checked:
            checks.append(_agreement(quantity, subject, step, slope, pred, exponent))
        # Target: Desideratum 1 / Condition 1 after the last step.
        target = targets.get((quantity, subject))
        if target is None:
            continue
        step = 0 if init else final_step
        slope = slopes.get((quantity, subject, step))
        if slope is None:
            continue
        pred = predicted.get((quantity, subject, step))
        offset = 0.0
        if pred is not None and exponent is not None and math.isfinite(pred):
            offset = pred - float(exponent)
        condition = _CONDITIONS.get(info.target if info is not None else None, "Desideratum 1")
        if quantity in ("rms_dh", "rms_dwh") and subject == output_layer:
            condition = "Sec. 4 (output change)"
        checks.append(_target((quantity, subject, step), slope, (pred, exponent, offset), target, condition,
                              (quantity, subject) in upper))
    return checks


_CONDITIONS = {"condition": "Condition 1", "desideratum": "Desideratum 1",
               "logits": "TP5 Def. 4.1 (attention logits)"}


#: Quantities whose finite-width prediction is compared with the measurement. The others are
#: reported with their predicted slope but not judged: the alignment after a few steps depends on
#: where two terms with unknown constants cross (init output vs its change), and the stable rank's
#: Theta(1) (Lemma 1) has no width exponent to compare beyond 0.
_AGREEMENT = ("rms_h", "rms_dh", "feature_change", "spectral_norm", "update_norm", "relative_update")
_ORDER = ("rms_h", "rms_dh", "feature_change", "rms_stream", "rms_dstream", "rms_logits", "rms_dlogits",
          "rms_dwh", "spectral_norm", "update_norm", "relative_update", "relative_frobenius", "stable_rank",
          "alignment")


def _order(quantity: str) -> int:
    return _ORDER.index(quantity) if quantity in _ORDER else len(_ORDER)


def _allowance(slope: Slope) -> float:
    return TOLERANCE + slope.margin


def _agreement(
    quantity: str, subject: str, step: int, slope: Slope, pred: float, exponent: sympy.Rational | None
) -> Check:
    title = QUANTITIES[quantity].title
    where = "at init" if step == 0 else f"after step {step}"
    if not slope.finite:
        return Check("agreement", quantity, subject, step, slope, pred, exponent, None, 0.0, False,
                     f"{title} of {subject} {where} could not be fit (fewer than two finite widths)")
    diff = slope.value - pred
    ok = abs(diff) <= _allowance(slope)
    if ok:
        msg = f"{title} of {subject} {where}: measured {_fmt(slope.value)}, predicted {_fmt(pred)}"
    else:
        msg = (f"{title} of {subject} {where}: measured slope {_fmt(slope.value)} +- {slope.stderr:.2f}, "
               f"the calculus predicts {_fmt(pred)} at these widths: measurement and prediction disagree "
               "(a bug in the calculus, the derivation, the emitted code or the model)")
    return Check("agreement", quantity, subject, step, slope, pred, exponent, None, 0.0, ok, msg)


def _target(
    key: tuple[str, str, int], slope: Slope, prediction: tuple[float | None, sympy.Rational | None, float],
    target: sympy.Rational, condition: str, upper: bool = False,
) -> Check:
    """``prediction``: the calculus' finite-width slope, its Theta-exponent and their difference."""
    quantity, subject, step = key
    pred, exponent, offset = prediction
    info = QUANTITIES[quantity]
    where = "at init" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"
    if not slope.finite:
        return Check("target", quantity, subject, step, slope, pred, exponent, target, offset, False,
                     f"{info.title} of {subject} {where} could not be fit (fewer than two finite widths)")
    corrected = slope.value - (offset if abs(offset) > ASYMPTOTIC else 0.0)
    gap = corrected - float(target)
    ok = gap <= _allowance(slope) if upper else abs(gap) <= _allowance(slope)
    finite = abs(offset) > ASYMPTOTIC
    note = (f" (measured {_fmt(slope.value)}, minus the finite-width offset {_fmt(offset)} the calculus "
            "predicts at these widths)") if finite else ""
    asks = f"at most n^{target}" if upper else f"n^{target}"
    if ok:
        msg = f"{info.title} of {subject} scales like n^{_fmt(corrected)}{note}; {condition} asks {asks}"
    else:
        trend = "too small" if gap < 0 else "too large"
        if quantity.startswith("rms"):
            what = "blows up" if gap > 0 else "vanishes"
        else:
            what = trend
        msg = (f"{info.title} of {subject} {where} {what}: it scales like n^{_fmt(corrected)}{note}, "
               f"{condition} asks {asks} ({trend} by n^{gap:+.2f})")
    return Check("target", quantity, subject, step, slope, pred, exponent, target, offset, ok, msg, upper)

