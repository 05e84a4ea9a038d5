"""What a verify run is asked to do: one frozen :class:`VerifyConfig`, and the defaults it falls back on.

The command line builds a config from its options and hands it to :func:`paramcalc.verify.verify`;
the library's keyword call (``verify(spec, "mup", "adam", widths=[...])``) builds the same config
from its keywords. ``None`` in a field means "the default for this architecture", chosen by
:func:`paramcalc.verify.plan.plan`: a chain trains on :data:`BATCH` examples with the MSE over
:data:`SEEDS` seeds in float32; a sequence model on :data:`SEQ_BATCH` sequences of :data:`SEQ_LEN`
tokens with next-token cross-entropy over :data:`SEQ_SEEDS` seeds in float64 (docs/verify.md
says why these numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["AUTO_FEATURE_CHANGE", "AUTO_OUTPUT_CHANGE", "BATCH", "DEFAULT_WIDTHS", "DTYPES", "IMAGE_BATCH",
           "SEEDS", "SEQ_BATCH", "SEQ_LEN", "SEQ_SEEDS", "ZERO_PROBE_WIDTHS", "Progress", "VerifyConfig"]

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
#: The predicted first-step RMS change of the output that ``lr="auto"`` aims for at base widths.
AUTO_OUTPUT_CHANGE = 0.1
#: Without a calculus: the measured first-step change, relative to its RMS, of the hidden feature
#: that moves most, that ``lr="auto"`` aims for at the smallest width (paramcalc.verify.calibrate).
AUTO_FEATURE_CHANGE = 0.1
#: Examples in a chain's batch (the default ``batch``), and its seeds.
BATCH = 32
SEEDS = 8
#: Sequences per batch, tokens per sequence and seeds for sequence models: few tokens keep the first
#: updates low-rank (the regime of Sec. 3.2.3 and App. B), more seeds tame their heavy tails.
SEQ_BATCH = 2
#: Images per batch for a model whose input is a convolution: one image is already many rows of
#: each convolution's gradient (its pixels or patches), so one keeps the first updates lowest-rank.
IMAGE_BATCH = 1
SEQ_LEN = 2
SEQ_SEEDS = 6
#: Widths at which :func:`~paramcalc.verify.probe.zero_gradient` looks for tensors without a gradient.
ZERO_PROBE_WIDTHS = 2
#: Floating-point types a verify run can train in. A chain defaults to float32 (its first updates
#: are far above float32's resolution); anything else to float64, where some first updates are
#: tiny next to their weights. Every run checks for rounding (``Measurement.rounded``).
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: ``progress(index, total, widths)``: called before each width of the sweep and once at the end.
Progress = Callable[[int, int, Mapping[str, int]], None]
Factory = Callable[[dict[str, int]], nn.Module]


@dataclass(frozen=True)
class VerifyConfig:
    """Everything a verify run is asked for; ``None`` picks the architecture's default.

    ``widths`` are values of the spec's first scaling width; ``seeds`` a count or the seeds
    themselves; ``lr`` the global learning rate (``None``: auto, :mod:`paramcalc.verify.calibrate`);
    ``model`` a factory ``module:function`` (or a callable) returning the model at given widths,
    required when the spec is neither a chain nor a transformer :func:`paramcalc.models.build_model`
    understands; ``measure_steps`` the steps after which updates are measured (``None``: every step);
    ``center`` trains the centered output ``f - f_0``; ``dtype`` is ``float32`` or ``float64``.
    Sequences are stored as tuples, so equal options make equal configs.
    """

    parametrization: str = "spectral"
    optimizer: str = "sgd"
    form: str | None = None
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    steps: int = 3
    seeds: int | tuple[int, ...] | None = None
    batch: int | None = None
    data: str = "synthetic"
    loss: str | None = None
    lr: float | None = None
    device: str = "auto"
    model: str | Factory | None = None
    measure_steps: tuple[int, ...] | None = None
    seq: int | None = None
    center: bool = True
    dtype: str | None = None
    #: Passed to :func:`paramcalc.derive`: Muon's ``adjust_lr_fn``, the weight-decay policy and kinds.
    muon_adjust: str | None = None
    #: Passed to :func:`paramcalc.derive` where a repeat's count scales (depth): 1 to 1/2, or "none".
    depth_alpha: float | str | None = None
    weight_decay_policy: str = "independent"
    decay: tuple[str, ...] = ("weight",)
    #: Weight decay tuned at the base widths, applied with each tensor's factor (0: none).
    weight_decay: float = 0.0
    #: Train Muon with this ``adjust_lr_fn`` rather than the derived one (a deliberate mismatch).
    train_adjust: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        if self.seeds is not None and not isinstance(self.seeds, int):
            object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "decay", tuple(self.decay))
        if self.measure_steps is not None:
            object.__setattr__(self, "measure_steps", tuple(self.measure_steps))
