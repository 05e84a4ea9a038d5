"""Where each width's optimum lies, and how far it drifts across widths.

The loss at a learning rate is the final training loss averaged over seeds (a diverged seed makes
it ``inf``). Each width's optimum is the vertex of the parabola in ``log2 lr`` through the grid's
best point and its two neighbours, in ``log`` of the loss (the loss near an optimum is close to a
parabola on that scale, and a diverged neighbour cannot be fit: then the grid's best point is the
optimum). An optimum on the grid's edge is flagged: the grid should be wider. The drift is the
spread of the optima across widths in ``log2`` units (1 = a factor of 2): hyperparameters transfer
where it stays within a grid step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Optimum", "analyse", "drift", "fit_optimum", "loss_table"]


@dataclass(frozen=True)
class Optimum:
    parametrization: str
    width: int
    #: The fitted optimum (the parabola's vertex, or the grid point where it cannot be fit).
    log2_lr: float
    #: The grid's best point.
    grid_log2_lr: float
    #: The mean final loss there.
    loss: float
    #: The best point is the grid's first or last: the optimum may lie outside.
    at_edge: bool


def loss_table(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict[float, float]]:
    """``{(parametrization, width): {log2_lr: mean final loss over seeds}}`` (``inf`` where diverged)."""
    sums: dict[tuple[str, int], dict[float, list[float]]] = {}
    for r in records:
        final = r.get("final")
        value = math.inf if final is None or r.get("diverged") else float(final)
        by_lr = sums.setdefault((r["parametrization"], int(r["width"])), {})
        by_lr.setdefault(float(r["log2_lr"]), []).append(value)
    return {key: {lr: sum(v) / len(v) for lr, v in sorted(by_lr.items())} for key, by_lr in sums.items()}


def fit_optimum(log2_lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, int]:
    """The vertex of the parabola in ``log2 lr`` through the best grid point and its neighbours (in
    ``log`` loss), and the best point's index; the best point itself where no parabola fits."""
    finite = [i for i, y in enumerate(losses) if math.isfinite(y) and y > 0]
    if not finite:
        return math.nan, -1
    best = min(finite, key=lambda i: losses[i])
    if best == 0 or best == len(losses) - 1 or not all(i in finite for i in (best - 1, best + 1)):
        return log2_lrs[best], best
    x0, x1, x2 = log2_lrs[best - 1], log2_lrs[best], log2_lrs[best + 1]
    y0, y1, y2 = (math.log(losses[i]) for i in (best - 1, best, best + 1))
    # Vertex of the parabola through three points (unequal spacing allowed).
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    if a <= 0:
        return x1, best
    return min(max(-b / (2 * a), x0), x2), best


def analyse(records: Iterable[Mapping[str, Any]]) -> list[Optimum]:
    """Each (parametrization, width)'s optimum, in the order parametrization, width."""
    out = []
    for (param, width), by_lr in sorted(loss_table(records).items()):
        lrs, losses = list(by_lr), list(by_lr.values())
        fitted, best = fit_optimum(lrs, losses)
        if best < 0:
            out.append(Optimum(param, width, math.nan, math.nan, math.inf, False))
            continue
        out.append(Optimum(param, width, fitted, lrs[best], losses[best], best in (0, len(lrs) - 1)))
    return out


def drift(optima: Iterable[Optimum], parametrization: str) -> float:
    """The spread (max - min) of the fitted optima across widths, in log2 units."""
    values = [o.log2_lr for o in optima if o.parametrization == parametrization and math.isfinite(o.log2_lr)]
    return max(values) - min(values) if len(values) > 1 else math.nan


def wider_no_worse(optima: Iterable[Optimum], parametrization: str, slack: float = 0.05) -> bool:
    """The loss at the optimum does not grow with width (within ``slack`` relative)."""
    losses = [o.loss for o in sorted(optima, key=lambda o: o.width) if o.parametrization == parametrization]
    return all(b <= a * (1 + slack) for a, b in zip(losses, losses[1:]))
