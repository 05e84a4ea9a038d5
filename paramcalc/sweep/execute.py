"""Where a sweep's points train: in this process, in a local process pool, or as Ray tasks.

Every executor takes the same :class:`~paramcalc.sweep.train.Job` and the points still to train, and
yields an :class:`Outcome` for each point as it finishes, in the order they finish; the caller appends
each record to the results file at once, so nothing finished is lost whichever engine ran it.

- ``serial``: one point after another in this process (on a GPU: the one process that owns it).
- ``stack`` (any engine): up to ``stack`` points of one parametrization and width train as one unit,
  batched (:mod:`~paramcalc.sweep.stacked`; on a GPU one kernel per layer for all of them). A unit
  that cannot run batched trains its points one by one. A Ray task or a pool worker trains a unit.
- ``pool``: a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` spawned processes, each
  with ``cores // workers`` torch threads (small models gain most: one step of a narrow model cannot
  use several cores, many points at once can).
- ``ray``: each ``(width, lr, seed)`` point is one Ray task (``num_cpus=1``, and ``num_gpus=1`` where
  the cluster has GPUs), on the cluster at ``address`` (``"auto"``: the one this machine belongs to, as
  ``ray start`` made it), or on a Ray instance started here (``"local"``). Ray is an optional extra,
  ``pip install "paramcalc[ray]"``.

A point that raises is an outcome too (its ``error``), not the end of the sweep: it is not written to
the results file, so a rerun trains it again. A user error (a bad factory, data that does not fit the
model) is the same at every point and is raised at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from paramcalc.errors import Problem, UsageError, UserError
from paramcalc.sweep.train import Job, train_point

__all__ = ["Outcome", "cores", "execute", "groups"]


@dataclass(frozen=True)
class Outcome:
    point: Any
    record: dict[str, Any] | None
    error: BaseException | None
    #: Points started and not yet finished, as this outcome arrives.
    running: int


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def execute(
    job: Job, todo: Sequence[Any], *, workers: int = 1, ray: str | None = None, stack: int = 1,
) -> Iterator[Outcome]:
    """Each point's outcome as it finishes, from Ray (``ray`` an address, ``"auto"`` or ``"local"``),
    a pool of ``workers`` processes, or this process (``workers == 1``); with ``stack > 1`` points of
    one parametrization and width train in units of up to ``stack``."""
    units = groups(todo, stack)
    if ray is not None:
        return _ray(job, units, ray)
    if workers > 1 and len(units) > 1:
        return _pool(job, units, workers)
    return _serial(job, units)


def groups(todo: Sequence[Any], stack: int) -> list[tuple[Any, ...]]:
    """``todo`` in units of up to ``stack`` consecutive points sharing parametrization and width."""
    units: list[list[Any]] = []
    for point in todo:
        unit = units[-1] if units else None
        if (unit is not None and len(unit) < stack
                and (unit[0].parametrization, unit[0].width) == (point.parametrization, point.width)):
            unit.append(point)
        else:
            units.append([point])
    return [tuple(unit) for unit in units]


def _serial(job: Job, units: Sequence[tuple[Any, ...]]) -> Iterator[Outcome]:
    left = sum(len(u) for u in units)
    for unit in units:
        left -= len(unit)
        for outcome in _outcomes(job, unit):
            yield Outcome(outcome.point, outcome.record, outcome.error, min(1, left))


def _outcomes(job: Job, unit: tuple[Any, ...]) -> list[Outcome]:
    """The unit's outcomes: trained together (:func:`~paramcalc.sweep.stacked.train_stacked`), or
    one by one where it is one point or cannot run batched."""
    if len(unit) > 1:
        from paramcalc.sweep.stacked import train_stacked

        try:
            return [Outcome(p, r, None, 0) for p, r in zip(unit, train_stacked(job, unit))]
        except UserError:
            raise
        except Exception:  # noqa: BLE001, S110 - not batchable (vmap refuses the model): one by one
            pass
    return [_outcome(job, point) for point in unit]


def _outcome(job: Job, point: Any, running: int = 0) -> Outcome:
    try:
        return Outcome(point, train_point(job, point), None, running)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - one point's failure is reported, the sweep goes on
        return Outcome(point, None, exc, running)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _pool(job: Job, units: Sequence[tuple[Any, ...]], workers: int) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = min(workers, len(units))
    threads = max(1, cores() // workers)
    # spawn, not fork: a forked child of a process that has run torch can deadlock in its thread pools.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(_outcomes, job, unit) for unit in units}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    running = min(workers, len(pending))
                    for outcome in future.result():
                        yield Outcome(outcome.point, outcome.record, outcome.error, running)
        finally:
            for future in pending:
                future.cancel()


def _ray(job: Job, units: Sequence[tuple[Any, ...]], address: str) -> Iterator[Outcome]:
    ray = _import_ray()
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and job.config.device != "cpu" else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_train)
    shared = ray.put(job)
    refs = {task.remote(shared, unit): unit for unit in units}
    capacity = max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                unit = refs.pop(ref)
                try:
                    outcomes = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that died (its worker killed, ...)
                    outcomes = [Outcome(p, None, getattr(exc, "cause", None) or exc, 0) for p in unit]
                running = min(capacity, sum(len(u) for u in refs.values()))
                for outcome in outcomes:
                    if isinstance(outcome.error, UserError):
                        raise outcome.error
                    yield Outcome(outcome.point, outcome.record, outcome.error, running)
    finally:
        for ref in refs:
            ray.cancel(ref)


def _ray_train(job: Job, unit: tuple[Any, ...]) -> list[Outcome]:
    """One Ray task: a user error comes back as the outcome's error (Ray would wrap a raised one)."""
    import torch

    torch.set_num_threads(1)
    try:
        return _outcomes(job, unit)
    except Exception as exc:  # noqa: BLE001 - the user error, re-raised by the driver
        return [Outcome(unit[0], None, exc, 0)]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError([Problem("--ray", 'Ray is not installed: pip install "paramcalc[ray]"')],
                         source="command line") from None
    return ray
