"""The grid of a sweep: its points, training one, and the results file that makes a sweep resumable.

Results are JSON lines, one finished point per line, appended and flushed to disk as each point
finishes. A rerun with the same file reads what is there, skips every point already done with the
same settings and trains the rest; a line cut short by a kill is ignored (its point is trained
again). A point whose loss stops being finite is recorded as diverged, with loss ``inf`` written as
``null``: it is a result, not a crash.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paramcalc.errors import Problem, UsageError

__all__ = ["Point", "Progress", "SweepConfig", "SweepFailed", "load_records", "points", "run_sweep"]


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep trains: the grid (parametrizations x widths x log2 learning rates x seeds) and
    how each point trains (optimizer, steps on a fixed batch of ``data``, or on a fresh batch each
    step where :attr:`streamed`)."""

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
    #: cpu, cuda, or auto (resolved where each point trains: a Ray task's node).
    device: str = "cpu"
    #: Tokens per sequence, for a sequence model (others ignore it).
    seq: int = 64

    @property
    def streamed(self) -> bool:
        """A fresh batch each step (``chars``: a language model sees new text at every step, as in
        training, and cannot memorise one batch), not one fixed batch."""
        return self.data == "chars"

    def settings(self) -> dict[str, Any]:
        """What each record must share with this config to count as done by it."""
        return {"optimizer": self.optimizer, "steps": self.steps, "batch": self.batch, "data": self.data,
                "loss": self.loss, "seq": self.seq}


@dataclass(frozen=True)
class Progress:
    """Where a sweep stands, as each point finishes: points done (in the results, from before or now),
    running, failed (raised; retried by a rerun) and in all; the point that just finished."""

    done: int
    running: int
    failed: int
    total: int
    point: Point | None = None


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


class SweepFailed(RuntimeError):
    """Some points raised (not diverged: raised); the others are in the results file and a rerun with it
    trains only the failed ones."""

    def __init__(self, failures: list[tuple[Point, BaseException]]) -> None:
        self.failures = failures
        point, exc = failures[0]
        super().__init__(f"{len(failures)} point(s) failed; the first, {point.parametrization} width "
                         f"{point.width} lr 2^{point.log2_lr:g} seed {point.seed}: "
                         f"{type(exc).__name__}: {exc}")


def run_sweep(
    spec: Any, config: SweepConfig, results: Path | str | None = None, *,
    model: str | None = None, workers: int = 1, ray: str | None = None, stack: int = 1,
    progress: Callable[[Progress], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every point of ``config`` not already in ``results`` (appending each as it finishes) and
    return the records of the whole grid, in grid order. ``spec`` is a spec (or its path), ``model``
    the ``pkg.mod:function`` factory of the user's model (None: built from the spec); points run in
    this process, in a pool of ``workers`` processes, or as Ray tasks (``ray``: an address, ``"auto"``
    or ``"local"``; :mod:`~paramcalc.sweep.execute`), up to ``stack`` points of one width batched
    together (:mod:`~paramcalc.sweep.stacked`). ``progress`` is called before the first point and
    after each. Raises :class:`SweepFailed` after the rest has finished when some points raised."""
    from paramcalc.spec import load_spec
    from paramcalc.sweep.execute import execute
    from paramcalc.sweep.train import Job

    path = None if results is None else Path(results)
    done = _done(path, config)
    grid = points(config)
    todo = [p for p in grid if p.key not in done]
    failures: list[tuple[Point, BaseException]] = []
    if progress is not None:
        progress(Progress(len(grid) - len(todo), 0, 0, len(grid)))
    for outcome in execute(Job(load_spec(spec), config, model), todo, workers=workers, ray=ray,
                           stack=stack):
        if outcome.record is not None:
            done[outcome.point.key] = outcome.record
            if path is not None:
                _append(path, outcome.record)
        else:
            failures.append((outcome.point, outcome.error))
        if progress is not None:
            progress(Progress(len(done), outcome.running, len(failures), len(grid), outcome.point))
    if failures:
        raise SweepFailed(failures)
    return [done[p.key] for p in grid]


def _done(path: Path | None, config: SweepConfig) -> dict[tuple[str, int, float, int], dict[str, Any]]:
    """The points of ``path`` trained with ``config``'s settings; a file holding others is refused."""
    done: dict[tuple[str, int, float, int], dict[str, Any]] = {}
    for record in [] if path is None else load_records(path):
        if not all(record.get(k) == v for k, v in config.settings().items()):
            why = _differences(record, config)
            raise UsageError([Problem("-o", f"{path} holds points trained with other settings ({why}); "
                                           "use another results file")], source="command line")
        done[_key(record)] = record
    return done


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
