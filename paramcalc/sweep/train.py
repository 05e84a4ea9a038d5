"""Training one point of a sweep: the model at one width, its parametrization applied through the
emitted code users call, ``steps`` steps (on one fixed batch, or a fresh batch each step for
streamed data), the loss after each.

A :class:`Job` is everything a point needs that does not change from point to point (the spec, the
``--model`` factory's import path, the config): it is built once, pickled to each worker process or
Ray task, and keeps its derivations and batches in a per-process cache, so a worker that trains many
points derives each parametrization once and draws each seed's batch once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "prepare", "record", "train_point"]


@dataclass
class Job:
    """The spec (a loaded :class:`~paramcalc.spec.Spec`, or a path), the factory's ``pkg.mod:function``
    (None: the model paramcalc builds from the spec) and the sweep's config."""

    spec: Any
    config: Any
    model: str | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "config": self.config, "model": self.model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _cache={})

    def derivation(self, parametrization: str) -> Any:
        key = ("derivation", parametrization)
        if key not in self._cache:
            from paramcalc.engine import derive

            self._cache[key] = derive(self.spec, parametrization, self.config.optimizer)
        return self._cache[key]

    def factory(self) -> Any:
        if self.model is None:
            return None
        if "factory" not in self._cache:
            from paramcalc.factory import load_factory

            self._cache["factory"] = load_factory(self.model)
        return self._cache["factory"]

    def batches(self, derivation: Any, widths: dict[str, int], seed: int) -> list[Any]:
        """The seed's batches, drawn once (the model's input and output do not change with width; an
        image's side is read from the factory's model at the first width it is drawn at): one fixed
        batch, or for streamed data (``chars``) a fresh one for each step and one more to end on."""
        key = ("batch", seed)
        if key not in self._cache:
            config = self.config
            count = config.steps + 1 if config.streamed else 1
            whole = draw_batch(derivation.spec, self.factory(), widths, config, seed, count)
            self._cache[key] = whole.split(config.batch)
        return self._cache[key]


def draw_batch(
    spec: Any, factory: Any, widths: dict[str, int], config: Any, seed: int, count: int = 1
) -> Any:
    """``count`` batches of ``config.data`` at once, drawn as verify draws them
    (:func:`~paramcalc.verify.plan.batch_drawer`: token sequences for a sequence model, images for a
    convolution first, vectors otherwise; or the ``--data`` hook's one batch)."""
    from paramcalc.verify.plan import batch_drawer, structure

    shape = structure(spec, factory)
    draw = batch_drawer(config.data, factory, shape, batch=config.batch * count, loss=config.loss,
                        seq=config.seq if shape.sequence else None)
    return draw(widths, (seed,))[seed]


def train_point(job: Job, point: Any) -> dict[str, Any]:
    """Train one point; its record (losses after each step, final loss, diverged, seconds)."""
    start = time.perf_counter()
    run, batches = prepare(job, point)
    losses = _train(run, batches, job.config.steps)
    return record(job, point, losses, time.perf_counter() - start)


def prepare(job: Job, point: Any) -> tuple[Any, list[Any]]:
    """The point's model at its width, seeded, built and parametrized through the emitted code for its
    learning rate, and its batches, on the config's device."""
    import torch

    from paramcalc.verify.model import apply_parametrization, build
    from paramcalc.verify.widths import sweep

    d = job.derivation(point.parametrization)
    (widths,) = sweep(d.spec, [point.width])
    device = torch.device(_where(job.config.device))
    batches = [b.to(device) for b in job.batches(d, widths, point.seed)]
    torch.manual_seed(point.seed)
    model = build(d, widths, factory=job.factory(), device=device)
    return apply_parametrization(d, model, widths, lr=2.0**point.log2_lr), batches


def record(job: Job, point: Any, losses: list[float], seconds: float) -> dict[str, Any]:
    """A finished point's line of the results file."""
    return {"parametrization": point.parametrization, "width": point.width, "log2_lr": point.log2_lr,
            "seed": point.seed, **job.config.settings(), "losses": [_json_number(x) for x in losses],
            "final": _json_number(losses[-1]), "diverged": not math.isfinite(losses[-1]),
            "seconds": round(seconds, 4)}


def _where(device: str) -> str:
    """``auto`` (a Ray task's setting): CUDA when this process has it, else the CPU."""
    from paramcalc.verify.plan import resolve_device

    return resolve_device(device).type if device == "auto" else device


def _train(run: Any, batches: list[Any], steps: int) -> list[float]:
    """The loss before each step and after the last (step ``k`` on ``batches[k]``, cycling: one fixed
    batch, or a fresh one per step, the last loss then on a batch never trained on); stops at the
    first loss that is not finite."""
    losses: list[float] = []
    for step in range(steps + 1):
        batch = batches[step % len(batches)]
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
