"""Hyperparameter transfer, shown: train a learning-rate x width grid and see where the optimum lands.

    >>> from paramcalc.sweep import SweepConfig, run_sweep, analyse             # doctest: +SKIP
    >>> records = run_sweep("examples/digits.yaml", SweepConfig(("mup", "sp")), "s.jsonl")  # doctest: +SKIP
    >>> for o in analyse(records): print(o.parametrization, o.width, o.log2_lr)  # doctest: +SKIP

The point of muP and of the spectral condition is that a learning rate tuned on a small model is the
right one for a large one (TP5, Fig. 1 and mup's README). Each point of the grid builds the model at
one width, applies the derived parametrization through the emitted code users call
(:func:`paramcalc.verify.model.apply_parametrization`: ``init_parameters``, ``apply_multipliers``,
``make_optimizers``), trains ``steps`` full-batch steps on a fixed batch and records the loss curve.
:mod:`~paramcalc.sweep.points` runs the grid (each finished point appended to a JSON-lines file at
once, so an interrupted sweep loses nothing and a rerun trains only what is missing);
:mod:`~paramcalc.sweep.analysis` finds each width's optimum (a parabola in ``log2 lr`` through the
grid's best point and its neighbours) and the drift of the optimum across widths.

A sweep must stop before every width fits its batch: then every learning rate near the optimum
reaches the same loss and the curves flatten (measured by hand on digits with Adam: at 200 steps the
optimum is flat under SP too, at 40 it moves from 2^-6 to 2^-8 between widths 32 and 2048).
"""

from paramcalc.sweep.analysis import Optimum, analyse, drift, fit_optimum
from paramcalc.sweep.points import (
    Point,
    Progress,
    SweepConfig,
    SweepFailed,
    load_records,
    points,
    run_sweep,
)
from paramcalc.sweep.train import Job, train_point

__all__ = ["Job", "Optimum", "Point", "Progress", "SweepConfig", "SweepFailed", "analyse", "drift",
           "fit_optimum", "load_records", "points", "run_sweep", "train_point"]
