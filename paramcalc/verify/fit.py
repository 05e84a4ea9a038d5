"""Slopes across widths: every quantity is fit as a power of the sweep width ``n``.

The fit is the least-squares slope of ``log value`` against ``log n``, once per seed
(:func:`loglog_slope`); the slope is the seeds' mean and its uncertainty their standard error
(with one seed, the regression's standard error). The calculus' finite-width numbers are fit the
same way (:func:`predicted_slope`), so that a measured and a predicted slope compare like with like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paramcalc.engine.calculus import Scaling
from paramcalc.verify.widths import lead_width

__all__ = ["Slope", "fit_slope", "loglog_slope", "predicted_slope", "predicted_slopes"]

#: Two-sided 95% quantiles of Student's t by degrees of freedom (beyond the table, 2.0).
_T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (NaN with fewer than two points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys)
           if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y)]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return math.nan
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


@dataclass(frozen=True)
class Slope:
    """A fitted log-log slope: mean over seeds, its standard error, each seed's slope.

    ``dof`` is the standard error's degrees of freedom (seeds - 1; with one seed, widths - 2).
    """

    value: float
    stderr: float
    per_seed: tuple[float, ...]
    points: int
    dof: int = 0

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    @property
    def margin(self) -> float:
        """Half-width of the 95% interval of the slope (0 when it cannot be estimated)."""
        if not math.isfinite(self.stderr) or self.dof < 1:
            return 0.0
        return _T95.get(self.dof, 2.0) * self.stderr


def fit_slope(xs: Sequence[float], rows: Sequence[Sequence[float]]) -> Slope:
    """``rows[s][i]`` is seed ``s``'s value at width ``xs[i]``; NaN, inf and non-positive values are
    left out (a diverged or skipped width)."""
    slopes = [loglog_slope(xs, row) for row in rows]
    good = [s for s in slopes if math.isfinite(s)]
    points = max((sum(1 for v in row if v > 0 and math.isfinite(v)) for row in rows), default=0)
    if not good:
        return Slope(math.nan, math.nan, tuple(slopes), points)
    mean = sum(good) / len(good)
    if len(good) >= 2:
        var = sum((s - mean) ** 2 for s in good) / (len(good) - 1)
        return Slope(mean, math.sqrt(var / len(good)), tuple(slopes), points, len(good) - 1)
    return Slope(mean, _regression_stderr(xs, rows[slopes.index(good[0])]), tuple(slopes), points,
                 max(points - 2, 0))


def _regression_stderr(xs: Sequence[float], ys: Sequence[float]) -> float:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y > 0 and math.isfinite(y)]
    if len(pts) < 3:
        return 0.0
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    a = my - b * mx
    resid = sum((p[1] - a - b * p[0]) ** 2 for p in pts)
    return math.sqrt(resid / (n - 2) / sxx)


def predicted_slopes(
    scaling: Scaling, widths: Sequence[Mapping[str, int]], lr: float = 1.0
) -> dict[tuple[str, str], float]:
    """The log-log slope of every finite-width prediction across ``widths``, against the sweep width
    (the spec's first scaling width), fit as measurements are, keyed by ``(quantity, subject)``."""
    lead = lead_width(scaling.spec)
    xs = [float(scaling.derivation.resolve_widths(at)[lead]) for at in widths]
    numbers = [scaling.evaluate(at, lr) for at in widths]
    return {key: loglog_slope(xs, [n[key] for n in numbers]) for key in scaling.predictions}


def predicted_slope(
    scaling: Scaling, quantity: str, subject: str, widths: Sequence[Mapping[str, int]], lr: float = 1.0
) -> float:
    """:func:`predicted_slopes` of one ``(quantity, subject)``."""
    return predicted_slopes(scaling, widths, lr)[(quantity, subject)]
