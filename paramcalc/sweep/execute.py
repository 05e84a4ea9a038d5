"""Where a sweep's points train: in this process, in a local process pool, or as Ray tasks.

Every executor takes the same :class:`~paramcalc.sweep.train.Job` and the points still to train, and
yields an :class:`Outcome` for each point as it finishes, in the order they finish; the caller appends
each record to the results file at once, so nothing finished is lost whichever engine ran it.

- ``serial``: one point after another in this process (on a GPU: the one process that owns it).
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

__all__ = ["Outcome", "cores", "execute"]


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


def execute(job: Job, todo: Sequence[Any], *, workers: int = 1, ray: str | None = None) -> Iterator[Outcome]:
    """Each point's outcome as it finishes, from Ray (``ray`` an address, ``"auto"`` or ``"local"``),
    a pool of ``workers`` processes, or this process (``workers == 1``)."""
    if ray is not None:
        return _ray(job, todo, ray)
    if workers > 1 and len(todo) > 1:
        return _pool(job, todo, workers)
    return _serial(job, todo)


def _serial(job: Job, todo: Sequence[Any]) -> Iterator[Outcome]:
    for i, point in enumerate(todo):
        yield _outcome(job, point, running=min(1, len(todo) - i - 1))


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


def _pool(job: Job, todo: Sequence[Any], workers: int) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    workers = min(workers, len(todo))
    threads = max(1, cores() // workers)
    # spawn, not fork: a forked child of a process that has run torch can deadlock in its thread pools.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(_outcome, job, p) for p in todo}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    yield Outcome(outcome.point, outcome.record, outcome.error, min(workers, len(pending)))
        finally:
            for future in pending:
                future.cancel()


def _ray(job: Job, todo: Sequence[Any], address: str) -> Iterator[Outcome]:
    ray = _import_ray()
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=cores(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and job.config.device != "cpu" else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_train)
    shared = ray.put(job)
    refs = {task.remote(shared, p): p for p in todo}
    capacity = max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                point = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task that died (its worker killed, ...)
                    outcome = Outcome(point, None, getattr(exc, "cause", None) or exc, 0)
                if isinstance(outcome.error, UserError):
                    raise outcome.error
                yield Outcome(point, outcome.record, outcome.error, min(capacity, len(refs)))
    finally:
        for ref in refs:
            ray.cancel(ref)


def _ray_train(job: Job, point: Any) -> Outcome:
    """One Ray task: a user error comes back as the outcome's error (Ray would wrap a raised one)."""
    import torch

    torch.set_num_threads(1)
    try:
        return _outcome(job, point)
    except Exception as exc:  # noqa: BLE001 - the user error, re-raised by the driver
        return Outcome(point, None, exc, 0)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError([Problem("--ray", 'Ray is not installed: pip install "paramcalc[ray]"')],
                         source="command line") from None
    return ray
