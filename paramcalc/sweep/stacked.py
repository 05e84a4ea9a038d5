"""Training the points of one width together: one batched forward and backward for all of them.

Points that share a parametrization and a width differ only in their learning rate and seed, so
their models have the same shapes and the same forward multipliers. Each model is still built and
parametrized on its own through the code users call (:func:`~paramcalc.verify.model.build`,
:func:`~paramcalc.verify.model.apply_parametrization`: the emitted ``init_parameters``,
``apply_multipliers``, ``make_optimizers``), so every number it trains with is the one a single point
would use. Then each parameter of the ``K`` models is copied into one stacked tensor of shape
``(K, *shape)`` and each model's parameter becomes a view of its slice. A step runs the first model's
modules on every slice at once (:func:`torch.func.functional_call` under :func:`torch.vmap`: on a
GPU, one kernel per layer for all ``K`` models instead of ``K``), with each point's own batch, and
one backward through the sum of the ``K`` losses gives each slice its own gradient (the models share
nothing, so the sum's gradient in slice ``k`` is loss ``k``'s). Each point's own optimizers then step
its views in place, unchanged: per-tensor learning rates, Adam's state, Muon's orthogonalisation.
One host sync per step (the ``K`` losses, read at once).

The result is the single points' training to float rounding (a batched matmul may sum in another
order; ``tests/test_sweep_stacked.py`` compares the two). A point that diverges stops there, as it
would alone; the others go on. A model that cannot run under ``vmap`` (data-dependent control flow,
in-place updates of buffers such as batch norm's running statistics) raises, and the executor trains
that group's points one by one instead (:func:`paramcalc.sweep.execute.execute`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

from paramcalc.sweep.train import Job, prepare, record

__all__ = ["train_stacked"]


def train_stacked(job: Job, group: Sequence[Any]) -> list[dict[str, Any]]:
    """Train ``group`` (points of one parametrization and width) together; a record per point, as
    :func:`~paramcalc.sweep.train.train_point` gives it, with ``stacked`` the group's size."""
    first = group[0]
    if any((p.parametrization, p.width) != (first.parametrization, first.width) for p in group):
        raise ValueError("a stacked group shares its parametrization and width")
    start = time.perf_counter()
    runs, batches = zip(*(prepare(job, point) for point in group))
    with warnings.catch_warnings():
        # An op without a batching rule (CPU attention) runs once per slice, as the points alone would.
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet",
                                category=UserWarning)
        losses = _train_together(runs, batches, job.config.steps)
    seconds = (time.perf_counter() - start) / len(group)
    return [record(job, p, curve, seconds) | {"stacked": len(group)} for p, curve in zip(group, losses)]


def _stack(runs: Sequence[Any]) -> dict[str, Any]:
    """One leaf tensor ``(K, *shape)`` per parameter name (a tied tensor once), each model's
    parameter made a view of its slice: its optimizer's in-place steps write into the stack."""
    import torch

    models = [dict(run.model.named_parameters()) for run in runs]
    stacked = {}
    for name in models[0]:
        whole = torch.stack([m[name].detach() for m in models])
        for k, m in enumerate(models):
            m[name].data = whole[k]
        stacked[name] = whole.requires_grad_(True)
    return stacked


def _train_together(runs: Sequence[Any], batches: Sequence[Sequence[Any]], steps: int) -> list[list[float]]:
    """Each run's losses, as :func:`paramcalc.sweep.train._train` records them, trained in one stack."""
    import torch
    from torch.func import functional_call

    base = runs[0].model
    stacked = _stack(runs)
    models = [dict(run.model.named_parameters()) for run in runs]
    kind = batches[0][0].loss

    def loss(params: dict[str, Any], x: Any, y: Any) -> Any:
        from paramcalc.verify.data import Batch

        return Batch(x, y, kind).loss_value(functional_call(base, params, (x,)))

    batched = torch.vmap(loss)
    curves: list[list[float]] = [[] for _ in runs]
    alive = [True] * len(runs)
    for step in range(steps + 1):
        here = [b[step % len(b)] for b in batches]
        values = batched(stacked, torch.stack([b.x for b in here]), torch.stack([b.y for b in here]))
        for k, value in enumerate(values.tolist()):  # the one host sync of the step
            if alive[k]:
                curves[k].append(value)
                alive[k] = math.isfinite(value) and step < steps
        if not any(alive):
            break
        mask = torch.tensor(alive, device=values.device)
        torch.where(mask, values, torch.zeros_like(values)).sum().backward()
        for k, run in enumerate(runs):
            if not alive[k]:
                continue
            for name, p in models[k].items():
                p.grad = stacked[name].grad[k]
            if not run.step():
                curves[k].append(math.inf)
                alive[k] = False
        for whole in stacked.values():
            whole.grad = None
    return curves
