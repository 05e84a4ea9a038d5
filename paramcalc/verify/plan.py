"""Planning a verify run: everything decided before the first model is trained at a sweep width.

:func:`plan` turns a spec and a :class:`~paramcalc.verify.config.VerifyConfig` into a frozen
:class:`VerifyPlan`:

1. the structure: a chain (the first-step calculus covers it), a transformer, or a factory's model;
   with it the defaults the config left open (batch, tokens, loss, seeds, floating-point type);
2. the derivation of the parametrization, and the calculus on it (:func:`paramcalc.engine.calculus.scaling`)
   when the spec is a chain; otherwise only the per-tensor ``||W||_*`` at init
   (:func:`~paramcalc.engine.calculus.local_scaling`), and the rest is judged on the paper's targets;
3. the widths of the sweep (:func:`paramcalc.verify.widths.sweep`), the seeds and their batches;
4. the global learning rate: given, or from the calculus, or, without one, from probe steps at the
   smallest width that fits (:mod:`paramcalc.verify.calibrate`);
5. without a calculus, the tensors that get no gradient at all (:func:`paramcalc.verify.probe.zero_gradient`):
   their updates are reported, not judged;
6. what each run measures (:class:`~paramcalc.verify.measure.RunSettings`).

Bad input of any kind raises :class:`~paramcalc.SpecError` here, before any training. For a chain
a plan trains nothing; without a calculus it takes the probe steps of 4 and 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sympy
import torch
from torch import nn

import paramcalc
from paramcalc.engine import Derivation
from paramcalc.engine.calculus import NotAChain, Scaling, local_scaling, scaling
from paramcalc.engine.factors import partner_lr_ratio
from paramcalc.errors import DeviceError, Problem, SpecError, UsageError
from paramcalc.infer.inputs import image_shape
from paramcalc.infer.probe import build_on_meta
from paramcalc.spec import Spec
from paramcalc.verify.calibrate import Calibration, ProbeSetup, calculus_lr, calibrate_lr
from paramcalc.verify.config import (
    AUTO_FEATURE_CHANGE,
    AUTO_OUTPUT_CHANGE,
    BATCH,
    DTYPES,
    IMAGE_BATCH,
    SEEDS,
    SEQ_BATCH,
    SEQ_LEN,
    SEQ_SEEDS,
    ZERO_PROBE_WIDTHS,
    VerifyConfig,
)
from paramcalc.verify.data import Batch, hook_batch, is_hook, make_batch
from paramcalc.verify.measure import RunSettings
from paramcalc.verify.model import does_not_fit, load_factory
from paramcalc.verify.probe import zero_gradient, zero_gradient_reason
from paramcalc.verify.widths import attention_heads, lead_width, sweep

__all__ = ["Structure", "VerifyPlan", "batch_drawer", "plan", "resolve_device"]

Factory = Callable[[dict[str, int]], nn.Module]


@dataclass(frozen=True)
class Structure:
    """Input and output of the model as the data generator needs them, and whether it is a chain."""

    spec: Spec
    first: str
    last: str
    sparse: bool
    chain: bool

    @property
    def images(self) -> bool:
        """Images in: the first weight layer is a convolution."""
        return self.spec.layer(self.first).kind == "conv"

    @property
    def sequence(self) -> bool:
        """Token sequences in (a transformer or a factory's model fed one-hot inputs)."""
        return not self.chain and self.sparse

    def _dim(self, layer: str, attr: str, at: Mapping[str, int]) -> int:
        expr = self.spec.layer(layer).attrs[attr]
        return int(sympy.sympify(expr).xreplace({self.spec.widths[k].symbol: v for k, v in at.items()}))

    def n_in(self, at: Mapping[str, int]) -> int:
        return self._dim(self.first, "fan_in", at)

    def n_out(self, at: Mapping[str, int]) -> int:
        return self._dim(self.last, "fan_out", at)

    @property
    def positions(self) -> int | None:
        """The position embedding's size, the longest sequence a transformer reads (None: none)."""
        top = [layer for layer in self.spec.layers if "block" not in layer.attrs]
        if not self.sequence or len(top) < 2 or not all(t.definition.reads_ids for t in top[:2]):
            return None
        expr = sympy.sympify(top[1].attrs["fan_in"]).xreplace(self.spec.base_values)
        return int(expr) if expr.is_Integer else None


def structure(spec: Spec, factory: Factory | None) -> Structure:
    """What the spec is; bad input when no model can be built from it."""
    weights = spec.weight_layers
    if not weights:
        raise SpecError([Problem("layers", "no linear or embedding layer to verify")], source=spec.source)
    first, last = weights[0], weights[-1]
    sparse = not first.definition.dense(first)
    chain = spec.topology.family == "chain"
    if spec.topology.family is None and factory is None:
        raise SpecError(
            [Problem("layers", "this spec is neither a chain of linear layers nor a transformer, so no "
                               "model can be built from it; pass --model module:function, a factory "
                               "returning your nn.Module at given widths")],
            source=spec.source,
        )
    return Structure(spec, first.name, last.name, sparse, chain)


@dataclass(frozen=True)
class VerifyPlan:
    """A verify run decided: what to train, at which widths and seeds, with which learning rate, and
    what to measure. :func:`paramcalc.verify.run.execute` executes it."""

    config: VerifyConfig
    spec: Spec
    derivation: Derivation
    factory: Factory | None
    structure: Structure
    #: The width assignment of every run of the sweep, smallest first.
    widths: tuple[dict[str, int], ...]
    lead: str
    seeds: tuple[int, ...]
    batch: int
    loss: str
    #: Tokens per sequence for sequence models (``None``: one input per example).
    seq: int | None
    device: torch.device
    dtype: str
    #: Whether the first-step calculus covers the architecture.
    chain: bool
    #: The calculus (a chain) or the per-tensor init predictions (anything else).
    scaling: Scaling
    notes: tuple[str, ...]
    lr: float
    lr_auto: bool
    calibration: Calibration | None
    #: Tensors without a gradient, with the reason, and their relative float64 gradient norms.
    excluded: Mapping[str, str]
    zero_gradients: Mapping[str, float]
    settings: RunSettings
    #: The training batch of each seed (drawn at the first width that fits).
    batches: Mapping[int, Batch]


def resolve_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU. Asking for CUDA without one is bad input."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError([Problem("--device", "cuda was asked for, but no CUDA device is available")],
                        source="command line")
    if device not in ("cpu", "cuda"):
        raise DeviceError([Problem("--device", f"expected auto, cpu or cuda, got {device!r}")],
                        source="command line")
    return torch.device(device)


def plan(spec: Spec | Mapping[str, Any] | str, config: VerifyConfig) -> VerifyPlan:
    """Decide a verify run (see the module docstring); raises :class:`~paramcalc.SpecError` on bad input."""
    loaded = paramcalc.load_spec(spec)  # type: ignore[arg-type]
    factory = load_factory(config.model) if isinstance(config.model, str) else config.model
    shape = structure(loaded, factory)
    batch, seq, loss, seeds = _family_defaults(shape, config)
    _check_settings(config, batch, seq, shape.positions)
    derivation = _derive(loaded, config)
    train_options = _train_options(config)  # checked before any work
    widths = sweep(loaded, sorted(set(config.widths)))
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    if not seed_list:
        raise UsageError([Problem("--seeds", "at least one seed")], source="command line")
    device = resolve_device(config.device)
    calc, notes, chain = _predictions(derivation, loss, config.center)
    if config.lr is not None and not (config.lr > 0 and math.isfinite(config.lr)):
        raise UsageError([Problem("--lr", f"expected a positive learning rate, got {config.lr}")],
                        source="command line")
    dtype = config.dtype or ("float32" if chain else "float64")
    fitting = [at for at in widths if not does_not_fit(derivation, at, batch, config.optimizer, device)]

    drawer = batch_drawer(config.data, factory, shape, batch=batch, loss=loss, seq=seq)

    def draw() -> dict[int, Batch]:  # every seed's batch, drawn at the first width that fits
        return {} if not fitting else drawer(fitting[0], seed_list)

    lr, calibration, batches = config.lr, None, None
    adam_ratio = partner_lr_ratio(derivation)
    if lr is None and chain:
        lr = calculus_lr(calc, None, AUTO_OUTPUT_CHANGE)
    elif lr is None:
        probe = ProbeSetup(centered=config.center, factory=factory, device=device, dtype=DTYPES[dtype],
                           adam_lr_ratio=adam_ratio)
        calibration, batches = _probe_lr(derivation, fitting, draw, config.optimizer, probe)
        lr = 1.0 if calibration is None else calibration.lr  # 1.0: nothing fits, every width is skipped
    batches = draw() if batches is None else batches
    notes += _input_note(batches, config, factory)
    if config.train_adjust not in (None, getattr(derivation.optimizer, "adjust", None)):
        notes.append(f"Muon trains with adjust_lr_fn={config.train_adjust} (--train-adjust), but the factors "
                     f"and the calculus' predictions are for {derivation.optimizer.adjust}: a deliberate "
                     "mismatch, so measurement and prediction disagree where it matters.")
    if chain and derivation.optimizer.name == "muon" and batch > 1:
        notes.append(_MUON_BATCH_NOTE.format(batch=batch))
    zero: dict[str, float] = {}
    if fitting and not chain:  # a chain's tensors all get a gradient; attention's key bias does not
        zero = zero_gradient(derivation, fitting[:ZERO_PROBE_WIDTHS], batches[seed_list[0]],
                             centered=config.center, factory=factory, device=device, seed=seed_list[0])
    settings = RunSettings(config.optimizer, float(lr), config.steps, _frozen(config.measure_steps),
                           adam_lr_ratio=adam_ratio, weight_decay=config.weight_decay,
                           options=train_options, centered=config.center,
                           structured=not chain,
                           logit_group=attention_heads(loaded, widths[0]), dtype=DTYPES[dtype])
    return VerifyPlan(
        config=config, spec=loaded, derivation=derivation, factory=factory, structure=shape,
        widths=tuple(widths), lead=lead_width(loaded), seeds=seed_list, batch=batch, loss=loss, seq=seq,
        device=device, dtype=dtype, chain=chain, scaling=calc, notes=tuple(notes), lr=float(lr),
        lr_auto=config.lr is None,
        calibration=calibration, excluded={name: zero_gradient_reason(derivation, name) for name in zero},
        zero_gradients=zero, settings=settings, batches=batches,
    )


def _input_note(batches: Mapping[int, Batch], config: VerifyConfig, factory: Factory | None) -> list[str]:
    """What a factory's model is fed, said in the report (its input is not the spec's to choose)."""
    if factory is None or not batches:
        return []
    b = next(iter(batches.values()))
    what = ("token ids" if not torch.is_floating_point(b.x) else
            "Gaussian images" if b.x.dim() > 2 and not is_hook(config.data) else "float inputs")
    source = f"from {config.data}" if is_hook(config.data) else f"{config.data} data"
    return [f"The model receives {what} of shape {tuple(b.x.shape)} ({source}; targets "
            f"{tuple(b.y.shape)}); give --data pkg.mod:function returning (inputs, targets) for others."]


def batch_drawer(data: str, factory: Factory | None, shape: Structure, *, batch: int, loss: str,
                 seq: int | None) -> Callable[[Mapping[str, int], tuple[int, ...]], dict[int, Batch]]:
    """How the seeds' batches are drawn at widths ``at`` (by verify and by the sweep): from the
    ``--data`` hook, or synthetic, digits or chars data shaped as the model's input layer reads it:
    token ids, vectors, or images whose side is the factory model's ``config.image_size`` (read from a
    build on the meta device)."""
    if is_hook(data):
        hook = load_factory(data, "--data")
        return lambda at, seeds: {s: hook_batch(hook, data, loss=loss, batch=batch, seed=s)
                                  for s in seeds}

    def draw(at: Mapping[str, int], seeds: tuple[int, ...]) -> dict[int, Batch]:
        image = None
        if shape.images:
            model = None if factory is None else build_on_meta(factory, at, "the --model factory").model
            image = image_shape(shape.spec, at, model)
        n_in = image if image is not None else shape.n_in(at)
        return {s: make_batch(data=data, loss=loss, batch=batch, seed=s, n_in=n_in,
                              n_out=shape.n_out(at), sparse=shape.sparse, seq=seq) for s in seeds}

    return draw


def _frozen(steps: tuple[int, ...] | None) -> frozenset[int] | None:
    return frozenset(steps) if steps is not None else None


def _family_defaults(shape: Structure, config: VerifyConfig) -> tuple[int, int | None, str, Any]:
    """Batch, tokens per sequence, loss and seeds: the config's, or the family's defaults."""
    sequence = shape.sequence
    batch, seq, loss, seeds = ((SEQ_BATCH, SEQ_LEN, "ce", SEQ_SEEDS) if sequence
                               else (BATCH, None, "mse", SEEDS))
    if shape.images:
        batch = IMAGE_BATCH

    def given(value: Any, default: Any) -> Any:
        return default if value is None else value

    return (given(config.batch, batch), given(config.seq, seq) if sequence else None,
            given(config.loss, loss), given(config.seeds, seeds))


def _check_settings(config: VerifyConfig, batch: int, seq: int | None, positions: int | None) -> None:
    problems = []
    steps = config.steps
    if seq is not None and seq < 1:
        problems.append(Problem("--seq", f"expected a positive sequence length, got {seq}"))
    elif seq is not None and positions is not None and seq > positions:
        problems.append(Problem("--seq", f"the model has {positions} positions; got sequences of {seq}"))
    if steps < 1:
        problems.append(Problem("--steps", f"expected at least 1 step, got {steps}"))
    if len(set(config.widths)) < 2:
        problems.append(Problem("--widths", "expected at least two different widths to fit a slope"))
    if batch < 1:
        problems.append(Problem("--batch", f"expected a positive batch size, got {batch}"))
    if config.measure_steps is not None and any(not 1 <= s <= steps for s in config.measure_steps):
        problems.append(Problem("measure_steps", f"steps to measure must lie in 1..{steps}"))
    if problems:
        raise UsageError(problems, source="command line")
    if config.dtype is not None and config.dtype not in DTYPES:
        raise UsageError([Problem("--dtype", f"expected one of {', '.join(DTYPES)}, got {config.dtype!r}")],
                        source="command line")


#: Why a chain trained with Muon and a batch can disagree with the per-example calculus.
_MUON_BATCH_NOTE = (
    "Muon with a batch of {batch}: the calculus is per example (a rank-one gradient). Muon's "
    "orthogonalised update gives each example's input direction the full step, while AdamW's sign update "
    "spreads over the batch's directions, so where a Muon-trained and an AdamW-trained term of a feature "
    "change cross at finite width the predicted slope can be off; --batch 1 is the calculus' own regime "
    "(docs/verify.md, 'Muon and the batch').")


def _train_options(config: VerifyConfig) -> dict[str, dict[str, Any]]:
    """Constructor options for the emitted optimizers: Muon's adjust_lr_fn when --train-adjust sets one."""
    if config.train_adjust is None:
        return {}
    from paramcalc.engine.optimizers.muon import ADJUSTS

    if config.optimizer != "muon" or config.train_adjust not in ADJUSTS:
        raise UsageError([Problem("--train-adjust", f"with --optimizer muon, one of {', '.join(ADJUSTS)}; "
                                                    f"got {config.train_adjust!r} with {config.optimizer}")],
                         source="command line")
    return {"muon": {"adjust_lr_fn": config.train_adjust}}


def _derive(spec: Spec, config: VerifyConfig) -> Derivation:
    try:
        return paramcalc.derive(spec, config.parametrization, config.optimizer, form=config.form,
                                muon_adjust=config.muon_adjust, weight_decay=config.weight_decay_policy,
                                depth_alpha=config.depth_alpha,
                                decay=config.decay)
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise UsageError(str(exc), source="command line") from None


def _predictions(derivation: Derivation, loss: str, center: bool) -> tuple[Scaling, list[str], bool]:
    """The calculus for a chain; otherwise the per-tensor init predictions, and a note saying so."""
    try:
        return scaling(derivation, loss, centered=center), [], True
    except NotAChain as exc:
        note = (f"No prediction for this architecture: the first-step calculus propagates through "
                f"chains only ({exc}). Predicted here, tensor by tensor: ||W||_* at init (and its "
                "finite-width offset); features, updates and attention logits are judged against "
                "Desideratum 1, Condition 1 and TP5 Def. 4.1 directly.")
        return local_scaling(derivation), [note], False


def _probe_lr(
    derivation: Derivation, fitting: list[dict[str, int]], draw: Callable[[], dict[int, Batch]],
    optimizer: str, setup: ProbeSetup,
) -> tuple[Calibration | None, dict[int, Batch] | None]:
    """Without a calculus: the learning rate from probe steps at the smallest width that fits, and
    the batches drawn for them. Anything that fails on the way means no lr could be calibrated."""
    if not fitting:
        return None, None
    try:
        batches = draw()
        return calibrate_lr(derivation, fitting[0], batches, optimizer, target=AUTO_FEATURE_CHANGE,
                            setup=setup), batches
    except ValueError as exc:
        raise SpecError([Problem("--lr", f"no learning rate could be calibrated ({exc}); give --lr")],
                        source="command line") from None
