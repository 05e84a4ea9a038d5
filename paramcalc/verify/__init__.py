"""Verification: sweep widths, measure spectral norms and feature updates, fit, judge.

    >>> from paramcalc.verify import verify
    >>> report = verify("examples/mlp.yaml", "mup", "adam", widths=[64, 128, 256])  # doctest: +SKIP
    >>> report.exit_code, report.summary                                            # doctest: +SKIP

The predictions come from :mod:`paramcalc.engine.calculus` (for chains; other architectures,
transformers included, are judged on the paper's targets alone); this package only measures and
compares. It imports torch; nothing on the ``paramcalc derive`` path imports it.
"""

from paramcalc.verify.judge import TOLERANCE, Check, Slope, fit_slope
from paramcalc.verify.linalg import SpectralNorm, spectral_norm, stable_rank
from paramcalc.verify.measure import Measurement, RunSettings, measure_width
from paramcalc.verify.probe import Calibration, calibrate_lr, zero_gradient
from paramcalc.verify.run import DEFAULT_WIDTHS, Report, resolve_device, verify

__all__ = [
    "DEFAULT_WIDTHS",
    "TOLERANCE",
    "Calibration",
    "Check",
    "Measurement",
    "Report",
    "RunSettings",
    "Slope",
    "SpectralNorm",
    "calibrate_lr",
    "fit_slope",
    "measure_width",
    "resolve_device",
    "spectral_norm",
    "stable_rank",
    "verify",
    "zero_gradient",
]
