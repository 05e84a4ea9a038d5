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

from paramcalc.verify.judge import TOLERANCE, Check

__all__ = ["EXIT_INCONCLUSIVE", "MAX_ALLOWANCE", "MIN_SPAN", "MIN_WIDTHS", "sweep_shortfall", "weigh"]

MIN_WIDTHS = 3
MIN_SPAN = 8
MAX_ALLOWANCE = 0.2
#: ``paramcalc verify``'s exit code when nothing failed but some check is inconclusive.
EXIT_INCONCLUSIVE = 3


def sweep_shortfall(lead: str, values: Sequence[int]) -> str | None:
    """Why a sweep over ``values`` of ``lead`` cannot support a verdict (None when it can)."""
    distinct = sorted(set(values))
    problems = []
    if len(distinct) < MIN_WIDTHS:
        problems.append(f"{len(distinct)} width{'s' if len(distinct) != 1 else ''} (at least {MIN_WIDTHS})")
    if distinct and distinct[-1] < MIN_SPAN * distinct[0]:
        span = distinct[-1] / distinct[0]
        problems.append(f"a span of {span:g}x (at least {MIN_SPAN}x)")
    if not problems:
        return None
    return (f"the sweep has {' and '.join(problems)}: widen --widths, e.g. "
            f"{','.join(str(distinct[0] * 2**k) for k in range(4)) if distinct else '64,128,256,512'}")


def weigh(checks: Sequence[Check], lead: str, values: Sequence[int], seeds: int) -> list[Check]:
    """``checks`` with ``evidence`` set on each passing check the evidence does not support."""
    short = sweep_shortfall(lead, values)
    out = []
    for c in checks:
        if not c.passed:
            out.append(c)
            continue
        allowance = TOLERANCE + c.measured.margin
        why = short
        if why is None and allowance > MAX_ALLOWANCE:
            plural = "s" if seeds != 1 else ""
            why = (f"its allowance +-{allowance:.2f} exceeds {MAX_ALLOWANCE} "
                   f"(slope +-{c.measured.stderr:.2f} over {seeds} seed{plural}): add --seeds")
        out.append(replace(c, evidence=why) if why else c)
    return out
