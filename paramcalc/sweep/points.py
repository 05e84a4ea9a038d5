"""The grid of a sweep: its points, training one, and the results file that makes a sweep resumable.

Results are JSON lines, one finished point per line, appended and flushed to disk as each point
finishes. A rerun with the same file reads what is there, skips every point already done with the
same settings and trains the rest; a line cut short by a kill is ignored (its point is trained
again). A point whose loss stops being finite is recorded as diverged, with loss ``inf`` written as
``null``: it is a result, not a crash.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paramcalc.errors import Problem, UsageError

__all__ = ["Point", "SweepConfig", "load_records", "points", "run_sweep", "train_point"]


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep trains: the grid (parametrizations x widths x log2 learning rates x seeds) and
    how each point trains (optimizer, full-batch steps on a fixed batch of ``data``)."""

    parametrizations: tuple[str, ...] = ("mup",)
    optimizer: str = "adam"
    #: Values of the spec's first scaling width; the other scaling widths follow in proportion.
    widths: tuple[int, ...] = (32, 128, 512, 2048)
    #: log2 of the global learning rates (the grid's x-axis).
    log2_lrs: tuple[float, ...] = tuple(float(k) for k in range(-12, -3))
    steps: int = 40
    seeds: int = 1
    batch: int = 128
    data: str = "digits"
    loss: str = "ce"
    device: str = "cpu"

    def settings(self) -> dict[str, Any]:
        """What each record must share with this config to count as done by it."""
        return {"optimizer": self.optimizer, "steps": self.steps, "batch": self.batch, "data": self.data,
                "loss": self.loss}


@dataclass(frozen=True)
class Point:
    parametrization: str
    width: int
    log2_lr: float
    seed: int

    @property
    def key(self) -> tuple[str, int, float, int]:
        return (self.parametrization, self.width, self.log2_lr, self.seed)


def points(config: SweepConfig) -> list[Point]:
    """Every point of the grid, widths of one size together (so a rerun resumes width by width)."""
    return [Point(p, w, lr, s) for p in config.parametrizations for w in config.widths
            for lr in config.log2_lrs for s in range(config.seeds)]


def train_point(spec: Any, point: Point, config: SweepConfig, derivations: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Train one point; its record (losses after each step, final loss, diverged, seconds)."""
    import torch

    from paramcalc.engine import derive
    from paramcalc.verify.model import apply_parametrization, build
    from paramcalc.verify.plan import structure
    from paramcalc.verify.widths import sweep

    derivations = {} if derivations is None else derivations
    d = derivations.get(point.parametrization)
    if d is None:
        d = derivations[point.parametrization] = derive(spec, point.parametrization, config.optimizer)
    start = time.perf_counter()
    (widths,) = sweep(d.spec, [point.width])
    torch.manual_seed(point.seed)
    device = torch.device(config.device)
    model = build(d, widths, factory=None, device=device)
    run = apply_parametrization(d, model, widths, lr=2.0**point.log2_lr)
    shape = structure(d.spec, None)
    batch = _batch(config.data, config.loss, config.batch, shape.n_in(widths), shape.n_out(widths),
                   shape.sparse, point.seed).to(device)
    losses = _train(run, batch, config.steps)
    diverged = not math.isfinite(losses[-1])
    return {"parametrization": point.parametrization, "width": point.width, "log2_lr": point.log2_lr,
            "seed": point.seed, **config.settings(), "losses": [_json_number(x) for x in losses],
            "final": _json_number(losses[-1]), "diverged": diverged,
            "seconds": round(time.perf_counter() - start, 4)}


@functools.lru_cache(maxsize=16)
def _batch(data: str, loss: str, size: int, n_in: int, n_out: int, sparse: bool, seed: int) -> Any:
    """A seed's fixed batch, drawn once per sweep rather than once per point (digits are read from
    disk): the widths change, the model's input and output do not."""
    from paramcalc.verify.data import make_batch

    return make_batch(data=data, loss=loss, batch=size, n_in=n_in, n_out=n_out, sparse=sparse, seed=seed)


def _train(run: Any, batch: Any, steps: int) -> list[float]:
    """The loss before each step and after the last; stops at the first loss that is not finite."""
    losses: list[float] = []
    for step in range(steps + 1):
        loss = batch.loss_value(run.model(batch.x))
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or step == steps:
            break
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not run.step():
            losses.append(math.inf)
            break
    return losses


def _json_number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def load_records(path: Path) -> list[dict[str, Any]]:
    """The finished points in a results file (a line cut short by a kill is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"parametrization", "width", "log2_lr", "seed"} <= set(record):
            records.append(record)
    return records


def _key(record: Mapping[str, Any]) -> tuple[str, int, float, int]:
    return (record["parametrization"], int(record["width"]), float(record["log2_lr"]), int(record["seed"]))


def run_sweep(
    spec: Any, config: SweepConfig, results: Path | str | None = None, *,
    progress: Callable[[Point, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every point of ``config`` not already in ``results`` (appending each as it finishes);
    returns the records of the whole grid. ``progress(point, done, total)`` is called before each
    point is trained."""
    path = None if results is None else Path(results)
    done = {}
    if path is not None:
        for record in load_records(path):
            if all(record.get(k) == v for k, v in config.settings().items()):
                done[_key(record)] = record
            else:
                why = _differences(record, config)
                raise UsageError([Problem("-o", f"{path} holds points trained with other settings ({why}); "
                                               "use another results file")], source="command line")
    grid = points(config)
    todo = [p for p in grid if p.key not in done]
    derivations: dict[str, Any] = {}
    for i, point in enumerate(todo):
        if progress is not None:
            progress(point, len(grid) - len(todo) + i, len(grid))
        record = train_point(spec, point, config, derivations)
        done[point.key] = record
        if path is not None:
            _append(path, record)
    return [done[p.key] for p in grid]


def _differences(record: Mapping[str, Any], config: SweepConfig) -> str:
    return ", ".join(f"{k} {record.get(k)!r} here, {v!r} asked" for k, v in config.settings().items()
                     if record.get(k) != v)


def _append(path: Path, record: Mapping[str, Any]) -> None:
    """One line, written and synced before the next point starts (after a newline, where a kill left
    the last line unfinished)."""
    start = ""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            start = "" if fh.read(1) == b"\n" else "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(start + json.dumps(record, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def parse_log2_grid(text: str) -> tuple[float, ...]:
    """``"-12:-4"`` (step 1), ``"-12:-4:0.5"`` or ``"-10,-8,-6"``: log2 learning rates."""
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0) or parts[1] < parts[0]:
                raise ValueError
            lo, hi, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1.0
            count = int(round((hi - lo) / step)) + 1
            if count > 200:
                raise ValueError
            return tuple(lo + k * step for k in range(count))
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError([Problem("--lrs", "expected log2 learning rates as LO:HI, LO:HI:STEP (at most 200 "
                                           f"points) or a comma list, e.g. -12:-4; got {text!r}")],
                         source="command line") from None
    if not all(math.isfinite(v) and -60 <= v <= 20 for v in values):
        raise UsageError([Problem("--lrs", f"log2 learning rates between -60 and 20, got {text!r}")],
                         source="command line")
    return values


def check_grid(config: SweepConfig, widths: Iterable[int]) -> None:
    """At least two widths and three learning rates (a parabola needs three points)."""
    problems = []
    if len(set(widths)) < 2:
        problems.append(Problem("--widths", "at least two different widths"))
    if len(config.log2_lrs) < 3:
        problems.append(Problem("--lrs", "at least three learning rates"))
    if config.steps < 1 or config.seeds < 1 or config.batch < 1:
        problems.append(Problem("--steps/--seeds/--batch", "positive integers"))
    if problems:
        raise UsageError(problems, source="command line")
