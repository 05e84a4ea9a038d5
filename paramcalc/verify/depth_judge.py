"""Judging a depth sweep (:mod:`paramcalc.verify.depth`): each measured slope in ``L`` against its
target or the depth rule's exponent, and on a residual chain against the first-step calculus through
its branches at the same depths (:mod:`paramcalc.engine.calculus.residual`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import sympy

from paramcalc.engine import Derivation
from paramcalc.engine.depth import predicted_exponents
from paramcalc.verify.depth import DepthCheck, DepthReport
from paramcalc.verify.fit import fit_slope
from paramcalc.verify.judge import ASYMPTOTIC, TOLERANCE

__all__ = ["calculus", "judge"]


def calculus(
    d: Derivation, report: DepthReport, sweep: Sequence[dict[str, int]], lead: str,
) -> dict[tuple[str, str, int], list[float]]:
    """The residual calculus' values at each width and depth swept (none where it does not apply)."""
    from paramcalc.engine.calculus.residual import depth_quantities, residual_problems

    if residual_problems(d):
        return {}
    out: dict[tuple[str, str, int], list[float]] = {}
    for at in sweep:
        suffix = f" at {lead}={at[lead]}" if len(sweep) > 1 else ""
        for depth in report.depths:
            here = at | {report.depth_width: depth}
            predicted = depth_quantities(d.at_depth(here), here, report.lr)
            for (quantity, subject, step), value in predicted.items():
                out.setdefault((quantity, subject + suffix, step), []).append(value)
    return out


def judge(report: DepthReport) -> list[DepthCheck]:
    """Each measured slope against its target or the depth rule's exponent, and against the calculus'
    slope at these depths where there is one. A target check subtracts the calculus' finite-depth
    offset (its slope here minus its limit, the target) where the calculus agrees with the measurement
    (its own check passes; without that the offset is not trusted) and the offset exceeds
    :data:`~paramcalc.verify.judge.ASYMPTOTIC`; the check shows the measured slope, the offset and the
    corrected slope. No offset without depth scaling: the targets are not its limits there."""
    from paramcalc.verify.evidence import shortfall, sweep_shortfall

    xs = [float(v) for v in report.depths]
    predicted = predicted_exponents(report.alpha)
    short = sweep_shortfall(report.depth_width, report.depths, "--depths")
    agreement = {}
    for key, values in report.calculus.items():
        if key in report.values and all(v > 0 and math.isfinite(v) for v in values):
            slope = fit_slope(xs, report.values[key])
            expected = fit_slope(xs, [values]).value
            ok = slope.finite and abs(slope.value - expected) <= TOLERANCE + slope.margin
            evidence = shortfall(slope, short, len(report.seeds)) if ok else None
            agreement[key] = DepthCheck("calculus", *key, slope, expected, False, ok, evidence)
    checks = []
    for key, rows in report.values.items():
        quantity = key[0]
        slope = fit_slope(xs, rows)
        kind, expected, upper = _expectation(quantity, predicted)
        agreed = agreement.get(key)
        offset = 0.0
        if kind == "target" and report.alpha is not None and agreed is not None and agreed.passed:
            offset = agreed.expected - expected
            offset = offset if abs(offset) > ASYMPTOTIC else 0.0
        allowance = TOLERANCE + slope.margin
        gap = slope.value - offset - expected
        ok = slope.finite and (gap <= allowance if upper else abs(gap) <= allowance)
        evidence = shortfall(slope, short, len(report.seeds)) if ok else None
        checks.append(DepthCheck(kind, *key, slope, expected, upper, ok, evidence, offset))
    return checks + list(agreement.values())


def _expectation(quantity: str, predicted: Mapping[str, sympy.Rational]) -> tuple[str, float, bool]:
    """(kind, expected slope, one-sided) of a depth quantity (the module docstring)."""
    if quantity == "stream":
        return "target", 0.0, True
    if quantity == "dstream":
        return "target", 0.0, False
    if quantity == "block_change":
        return "target", -1.0, False
    return "prediction", float(predicted[quantity]), False
