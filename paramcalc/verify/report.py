"""The :class:`Report` of a verify run: data only (settings, raw measurements, slopes, checks).

Its text, table and JSON are drawn by :mod:`paramcalc.verify.present`, its figure by
:mod:`paramcalc.verify.plot`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paramcalc.engine.calculus import Scaling
from paramcalc.spec import Spec
from paramcalc.verify.calibrate import Calibration
from paramcalc.verify.fit import Slope
from paramcalc.verify.judge import Check
from paramcalc.verify.measure import Measurement

__all__ = ["Report"]


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
    def passed(self) -> bool:
        """Every check passes on enough evidence, and nothing else was found."""
        return self.verdict == "pass"

    @property
    def verdict(self) -> str:
        """``fail`` (a check fails, or a finding), ``inconclusive`` (none fails, but some pass on too
        little evidence: :mod:`paramcalc.verify.evidence`) or ``pass``."""
        if self.failures or self.findings or not self.checks:
            return "fail"
        return "inconclusive" if self.inconclusive else "pass"

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 inconclusive."""
        from paramcalc.verify.evidence import EXIT_INCONCLUSIVE

        return {"pass": 0, "fail": 1}.get(self.verdict, EXIT_INCONCLUSIVE)

    @property
    def inconclusive(self) -> list[Check]:
        """Passing checks without the evidence for a verdict."""
        return [c for c in self.checks if c.verdict == "inconclusive"]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def lead_values(self) -> list[int]:
        return [at[self.lead] for at in self.widths]

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

    # Conveniences for library callers; the text itself is paramcalc.verify.present's.
    @property
    def summary(self) -> str:
        """:func:`paramcalc.verify.present.summary` of this report."""
        from paramcalc.verify.present import summary

        return summary(self)

    def to_json(self) -> dict[str, Any]:
        """:func:`paramcalc.verify.present.to_json` of this report."""
        from paramcalc.verify.present import to_json

        return to_json(self)


def __getattr__(name: str) -> Any:
    """The terminal table lived here before :mod:`paramcalc.verify.present`: old imports keep working."""
    if name in ("ROWS", "print_report", "report_table"):
        from paramcalc.verify import present

        return getattr(present, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
