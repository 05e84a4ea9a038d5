"""Verification: sweep widths, measure spectral norms and feature updates, fit, judge.

    >>> from paramcalc.verify import VerifyConfig, execute, plan, present, verify
    >>> report = verify("examples/mlp.yaml", "mup", "adam", widths=[64, 128, 256])  # doctest: +SKIP
    >>> the_plan = plan("examples/mlp.yaml", VerifyConfig("mup", "adam", widths=(64, 128)))  # doctest: +SKIP
    >>> report = execute(the_plan)                                                  # doctest: +SKIP
    >>> report.exit_code, present.summary(report)                                   # doctest: +SKIP

A run is config -> plan -> run -> present: :mod:`~paramcalc.verify.config`,
:mod:`~paramcalc.verify.plan`, :mod:`~paramcalc.verify.run` (:func:`execute`, with
:mod:`~paramcalc.verify.measure`, :mod:`~paramcalc.verify.fit` and :mod:`~paramcalc.verify.judge`),
and :mod:`~paramcalc.verify.present` and :mod:`~paramcalc.verify.plot` (docs/verify.md). The
predictions come from :mod:`paramcalc.engine.calculus` (for chains; other architectures,
transformers included, are judged on the paper's targets alone); this package only measures and
compares. It imports torch; nothing on the ``paramcalc derive`` path
imports it.
"""

import sys

from paramcalc import CallablePackage
from paramcalc.verify import present
from paramcalc.verify.calibrate import Calibration, calculus_lr, calibrate_lr
from paramcalc.verify.config import DEFAULT_WIDTHS, VerifyConfig
from paramcalc.verify.fit import Slope, fit_slope, loglog_slope, predicted_slope
from paramcalc.verify.judge import TOLERANCE, Check
from paramcalc.verify.linalg import SpectralNorm, spectral_norm, stable_rank
from paramcalc.verify.measure import Measurement, RunSettings, measure_width
from paramcalc.verify.plan import VerifyPlan, plan, resolve_device
from paramcalc.verify.probe import zero_gradient
from paramcalc.verify.report import Report
from paramcalc.verify.run import execute, verify
from paramcalc.verify.widths import sweep

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
    "VerifyConfig",
    "VerifyPlan",
    "calculus_lr",
    "calibrate_lr",
    "execute",
    "fit_slope",
    "loglog_slope",
    "measure_width",
    "plan",
    "predicted_slope",
    "present",
    "resolve_device",
    "spectral_norm",
    "stable_rank",
    "sweep",
    "verify",
    "zero_gradient",
]


sys.modules[__name__].__class__ = CallablePackage  # paramcalc.verify(...) after a submodule import
