"""Evidence before verdicts: when a slope fit is too weak to say ``PASS``.

A check passes when its measured slope lies within ``TOLERANCE + margin`` of what it asks (the
margin: half the 95% interval over seeds, :mod:`paramcalc.verify.judge`). With few widths or seeds
that allowance is wide enough to let anything pass: muP with its hidden SGD learning rate times
``sqrt(m)`` (hidden updates ``n^+1/2``) passed ``--widths 64,128 --seeds 2``, where the allowance is
0.5 to 1.5 in slope. So a passing check counts only with

- a sweep of at least :data:`MIN_WIDTHS` widths spanning at least :data:`MIN_SPAN` x, and
- an allowance of at most :data:`MAX_ALLOWANCE` (0.1 tolerance plus at most 0.1 of interval);

otherwise it is *inconclusive*, and says what to add. A failing check stays a failure: its slope lies
outside even the wide interval. A report with no failure and an inconclusive check exits 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from paramcalc.verify.fit import Slope
from paramcalc.verify.judge import TOLERANCE, Check

__all__ = ["EXIT_INCONCLUSIVE", "MAX_ALLOWANCE", "MIN_SPAN", "MIN_WIDTHS", "shortfall", "sweep_shortfall",
           "weigh"]

MIN_WIDTHS = 3
MIN_SPAN = 8
MAX_ALLOWANCE = 0.2
#: ``paramcalc verify``'s exit code when nothing failed but some check is inconclusive.
EXIT_INCONCLUSIVE = 3


def sweep_shortfall(lead: str, values: Sequence[int], option: str = "--widths") -> str | None:
    """Why a sweep over ``values`` of ``lead`` cannot support a verdict (None when it can); the same
    bar holds for a sweep over depth (``option="--depths"``)."""
    distinct = sorted(set(values))
    noun = "depth" if option == "--depths" else "width"
    problems = []
    if len(distinct) < MIN_WIDTHS:
        problems.append(f"{len(distinct)} {noun}{'s' if len(distinct) != 1 else ''} (at least {MIN_WIDTHS})")
    if distinct and distinct[-1] < MIN_SPAN * distinct[0]:
        span = distinct[-1] / distinct[0]
        problems.append(f"a span of {span:g}x (at least {MIN_SPAN}x)")
    if not problems:
        return None
    example = ",".join(str(distinct[0] * 2**k) for k in range(4)) if distinct else "64,128,256,512"
    return f"the sweep has {' and '.join(problems)}: widen {option}, e.g. {example}"


def shortfall(slope: Slope, short: str | None, seeds: int) -> str | None:
    """Why a passing check of ``slope`` does not count (None when it does): the sweep's ``short``,
    else an allowance over :data:`MAX_ALLOWANCE`."""
    allowance = TOLERANCE + slope.margin
    if short is None and allowance > MAX_ALLOWANCE:
        plural = "s" if seeds != 1 else ""
        return (f"its allowance +-{allowance:.2f} exceeds {MAX_ALLOWANCE} "
                f"(slope +-{slope.stderr:.2f} over {seeds} seed{plural}): add --seeds")
    return short


def weigh(checks: Sequence[Check], lead: str, values: Sequence[int], seeds: int) -> list[Check]:
    """``checks`` with ``evidence`` set on each passing check the evidence does not support."""
    short = sweep_shortfall(lead, values)
    out = []
    for c in checks:
        why = shortfall(c.measured, short, seeds) if c.passed else None
        out.append(replace(c, evidence=why) if why else c)
    return out
