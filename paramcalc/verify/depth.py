"""Verify across depth: train a residual network at several depths ``L`` and fit slopes in ``L``.

``paramcalc verify SPEC --depths 2,4,8,16`` (widths fixed at the spec's bases, or at each value of
``--widths``). The spec's depth is a repeat whose count scales (:mod:`paramcalc.engine.depth`). At each
depth and seed the model is built with ``L`` blocks, parametrized through the emitted PyTorch code
(init, multipliers, branch multipliers, optimizers: :func:`paramcalc.verify.model.apply_parametrization`)
and trained ``steps`` full-batch steps on one fixed batch of token sequences (for a chain with
``residual: true`` blocks, a residual MLP: one batch of dense inputs with ``+-1`` targets and the
MSE). Measured, per depth:

``stream``
    RMS of the residual stream where the blocks end (the input of the layer after the last block),
    at init. Target: bounded in ``L`` (slope at most 0): under ``alpha >= 1/2`` the branches add
    variance ``m_L^(1 - 2 alpha)``; at ``alpha = 1`` their share even shrinks towards the
    embeddings' as ``L`` grows, so the check is one-sided. Without depth scaling it grows like ``sqrt(L)``.
``stream change``
    RMS of that stream's change after each step. Target: Theta(1) (slope 0).
``block change`` (first, middle and last block)
    RMS of the change of the block's output from its own update: the block with the weights after
    the step, minus the block at init, both fed the block's input at init. Target: Theta(1/L)
    (slope -1): each block's own learning is ``1/L`` of the stream's, for every ``alpha``. The
    change of the block's *input* is left out on purpose: it passes through the block at init
    weights and is ``Theta(L^-alpha)``, laziness that CompleteP (``alpha = 1``) removes and
    depth-muP (``alpha = 1/2``) keeps (Dey et al. 2025, Sec. 3).
``block at init`` and ``||dW||_*`` (the block's largest update of a matrix, after step 1)
    predictions: slope ``-alpha`` and ``alpha - 1`` (:func:`paramcalc.engine.depth.predicted_exponents`).

On a residual chain every quantity at init and after step 1 is also judged against the first-step
calculus through its residual branches (:mod:`paramcalc.engine.calculus.residual`), evaluated at the
same widths, depths and learning rate (``calculus`` checks): the slope the calculus' numbers have over
the depths swept, the finite-depth prediction, of which the exponents above are the limits (e.g. at
``alpha = 1`` the stream at init has slope ``-0.29`` over ``L = 2..16``, as measured, and ``-0.10``
from 16 to 64: the branches' share shrinks towards the input layer's). The calculus is per example
and the verifier's batch of 4 changes the constants of the changes (measured 0.4x the calculus'
size, at every depth), not their slopes. A transformer's attention is outside the calculus: its
blocks are judged on the targets and the depth rule's exponents only.

A check passes within :data:`paramcalc.verify.judge.TOLERANCE` plus the half-width of the slope's
95% interval over seeds, as across widths, and counts only on the evidence a width sweep needs
(:mod:`paramcalc.verify.evidence`): at least 3 depths spanning at least 8x and an allowance of at
most 0.2. A passing check without it is *inconclusive* (it says what to add) and the report exits 3
when nothing failed: ``--depths 2,4`` or 2 seeds cannot tell ``L^-1`` from ``L^-1/2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from paramcalc.engine import Derivation, derive, get_optimizer
from paramcalc.errors import Problem, SpecError, UsageError
from paramcalc.spec import Spec, load_spec
from paramcalc.verify.depth_probe import make_probe
from paramcalc.verify.fit import Slope

__all__ = ["DepthCheck", "DepthReport", "verify_depth"]

#: Seeds per depth: with 3, the 95% interval (t = 4.3) of a slope measured to +-0.03 already exceeds
#: the evidence bar's allowance; 6 (t = 2.6) keeps it under.
DEFAULT_SEEDS = 6
#: Where in the stack a block is measured: the first, the middle and the last.
POSITIONS = ("first", "middle", "last")
QUANTITY_TITLES = {"stream": "RMS(stream)", "dstream": "RMS(d stream)", "block_init": "RMS(block at init)",
                   "block_change": "RMS(d block, own update)", "update": "max ||dW||_*"}


@dataclass(frozen=True)
class DepthCheck:
    """One slope in ``L`` against its target or prediction."""

    kind: str  # "target", "prediction" (the depth rule's exponent) or "calculus" (its finite-depth slope)
    quantity: str
    subject: str
    step: int
    slope: Slope
    expected: float
    upper: bool
    passed: bool
    #: Why a passing slope does not count (too few depths or seeds); None when it counts.
    evidence: str | None = None
    #: The calculus' finite-depth offset subtracted from the measured slope (0: none applied).
    offset: float = 0.0

    @property
    def corrected(self) -> float:
        """The measured slope minus :attr:`offset`: what is judged."""
        return self.slope.value - self.offset

    @property
    def verdict(self) -> str:
        """``"pass"``, ``"fail"`` or ``"inconclusive"`` (passing on too little evidence)."""
        return "fail" if not self.passed else "inconclusive" if self.evidence else "pass"

    @property
    def message(self) -> str:
        title = QUANTITY_TITLES[self.quantity]
        where = "at init" if self.step == 0 else f"after step {self.step}"
        asks = f"at most L^{self.expected:g}" if self.upper else f"L^{self.expected:g}"
        source = {"prediction": "the depth rule predicts", "calculus": "the calculus predicts at these depths"
                  }.get(self.kind, "the target is")
        verdict = {"pass": "ok", "fail": "FAILS", "inconclusive": "inconclusive"}[self.verdict]
        note = (f" (measured {self.slope.value:+.2f}, minus the finite-depth offset {self.offset:+.2f} the "
                "calculus predicts at these depths)") if self.offset else ""
        text = (f"{verdict}: {title} of {self.subject} {where} scales like L^{self.corrected:+.2f} "
                f"+- {self.slope.stderr:.2f}{note}; {source} {asks}")
        return f"{text} ({self.evidence})" if self.evidence else text


@dataclass
class DepthReport:
    """A sweep over depth: the measured values, the checks, and what was run."""

    spec: str
    parametrization: str
    optimizer: str
    alpha: sympy.Rational | None
    depth_width: str
    depths: tuple[int, ...]
    widths: tuple[dict[str, int], ...]
    lr: float
    steps: int
    seeds: tuple[int, ...]
    #: (quantity, subject, step) -> per seed, the value at each depth.
    values: dict[tuple[str, str, int], list[list[float]]] = field(default_factory=dict)
    #: (quantity, subject, step) -> the first-step calculus' value at each depth (residual chains).
    calculus: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    checks: list[DepthCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every check passes on enough evidence."""
        return bool(self.checks) and all(c.verdict == "pass" for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a check fails, 3 nothing fails but some check is inconclusive."""
        from paramcalc.verify.evidence import EXIT_INCONCLUSIVE

        return 0 if self.passed else 1 if self.failures or not self.checks else EXIT_INCONCLUSIVE

    @property
    def failures(self) -> list[DepthCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def inconclusive(self) -> list[DepthCheck]:
        return [c for c in self.checks if c.verdict == "inconclusive"]

    @property
    def alpha_text(self) -> str:
        return "none (no depth scaling)" if self.alpha is None else str(self.alpha)


def verify_depth(
    spec: Spec | Mapping[str, Any] | str, parametrization: str = "mup", optimizer: str = "adam", *,
    depths: Sequence[int], options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DepthReport:
    """Train at each depth and judge the slopes in ``L`` (module docstring). ``options``: ``widths``
    (values of the spec's first scaling width; default its base), ``depth_alpha``, ``steps`` (3),
    ``seeds`` (:data:`DEFAULT_SEEDS`), ``batch`` (4 sequences), ``seq`` (8 tokens), ``lr`` (the
    optimizer's probe rate), ``dtype`` (float64), ``device`` (cpu), ``factory`` (a function building
    the model from its widths, as ``--model``: its blocks are the list the spec's repeat names, and
    their branches get the branch multiplier by :mod:`paramcalc.infer.branches`)."""
    o = dict(options or {})
    loaded = load_spec(spec)
    block = _depth_block(loaded, factory=o.get("factory") is not None)
    depths = _check_depths(depths)
    try:
        d = derive(loaded, parametrization, optimizer, depth_alpha=o.get("depth_alpha"))
    except ValueError as exc:  # depth_alpha out of range
        if isinstance(exc, SpecError):
            raise
        raise UsageError(str(exc), source="command line") from None
    lead = next(w.name for w in loaded.widths.values() if w.scaling and not w.depth)
    from paramcalc.widths import widths_at

    sweep = [widths_at(loaded, **{lead: v}) for v in o.get("widths") or (loaded.widths[lead].value,)]
    seeds = tuple(range(o.get("seeds") or DEFAULT_SEEDS))
    lr = float(o.get("lr") or get_optimizer(optimizer).probe_lr)
    report = DepthReport(loaded.name, d.parametrization, d.optimizer.name, d.depth_alpha, block.width,
                         depths, tuple(sweep), lr, int(o.get("steps") or 3), seeds)
    run = _Runner(d, report, o)
    for at in sweep:
        suffix = f" at {lead}={at[lead]}" if len(sweep) > 1 else ""
        for i, depth in enumerate(depths):
            for seed in seeds:
                if progress is not None:
                    progress(f"L={depth} ({i + 1}/{len(depths)}), seed {seed}{suffix}")
                run.one(at | {block.width: depth}, seed, i, suffix)
    from paramcalc.verify.depth_judge import calculus, judge

    report.calculus = calculus(d, report, sweep, lead)
    report.checks = judge(report)
    return report


def _depth_block(spec: Spec, *, factory: bool) -> Any:
    if not spec.depth_blocks:
        raise SpecError([Problem("layers", "--depths needs a repeat whose count scales: declare the count "
                                           "a scaling width (`n_layers: {base: 4}`, `repeat: n_layers`; "
                                           "with --model, `--scale ...,n_layers`)")],
                        source=spec.source)
    if spec.topology.family is None and not factory:
        raise SpecError([Problem("layers", "--depths trains models paramcalc builds: transformers (residual "
                                           "branches after their pre-norm) or chains with residual: true "
                                           "blocks; this spec is neither")]
                        + list(spec.topology.chain_problems),
                        source=spec.source)
    return spec.depth_blocks[0]


def _check_depths(depths: Sequence[int]) -> tuple[int, ...]:
    values = tuple(sorted(set(int(v) for v in depths)))
    if len(values) < 2 or values[0] < 1:
        raise UsageError("--depths: at least two positive block counts, e.g. 2,4,8,16",
                         source="command line")
    if max(values) < 2 * min(values):
        raise UsageError("--depths: span at least a factor 2 (a slope needs a range)", source="command line")
    return values


def _rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


class _Runner:
    """Training and measuring one (depth, seed); values go into the report."""

    def __init__(self, d: Derivation, report: DepthReport, options: Mapping[str, Any]) -> None:
        self.d, self.report = d, report
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[options.get("dtype") or "float64"]
        self.device = torch.device(options.get("device") or "cpu")
        self.batch, self.seq = int(options.get("batch") or 4), int(options.get("seq") or 8)
        self.factory = options.get("factory")

    def _put(self, key: tuple[str, str, int], seed_index: int, depth_index: int, value: float) -> None:
        rows = self.report.values.setdefault(key, [[math.nan] * len(self.report.depths)
                                                   for _ in self.report.seeds])
        rows[seed_index][depth_index] = value

    def one(self, at: dict[str, int], seed: int, depth_index: int, suffix: str) -> None:
        from paramcalc.verify.model import apply_parametrization, build

        d = self.d.at_depth(at)
        torch.manual_seed(seed)
        model = build(d, at, factory=self.factory, device=self.device, dtype=self.dtype)
        p = apply_parametrization(d, model, at, lr=self.report.lr)
        probe = make_probe(model, d, self.report.depth_width, at, factory=self.factory is not None)
        batch = _batch(d, at, self.batch, self.seq, seed, self.factory).to(self.device, self.dtype)
        put = lambda q, s, step, v: self._put((q, s + suffix, step), seed, depth_index, v)  # noqa: E731
        streams0, final0 = probe.forward(batch.x)
        outputs0 = {pos: probe.block(k, streams0[k]) for pos, k in probe.blocks.items()}
        put("stream", "the stream", 0, _rms(final0))
        for pos, k in probe.blocks.items():
            put("block_init", probe.label(pos), 0, _rms(outputs0[pos] - streams0[k]))
        weights0 = probe.matrices()
        for step in range(1, self.report.steps + 1):
            loss = batch.loss_value(model(batch.x))
            loss.backward()
            p.step()
            p.optimizer.zero_grad()
            _, final = probe.forward(batch.x)
            put("dstream", "the stream", step, _rms(final - final0))
            for pos, k in probe.blocks.items():
                put("block_change", probe.label(pos), step, _rms(probe.block(k, streams0[k]) - outputs0[pos]))
            if step == 1:
                for pos, names in probe.by_block.items():
                    put("update", probe.label(pos), 1, max(probe.update_norm(n, weights0[n], p.multipliers[n])
                                                            for n in names))


def _batch(d: Derivation, at: Mapping[str, int], batch: int, seq: int, seed: int, factory: Any) -> Any:
    from paramcalc.verify.data import make_batch
    from paramcalc.verify.plan import structure

    shape = structure(d.spec, factory)
    if d.spec.topology.family == "chain":  # a residual MLP: dense inputs, +-1 targets (data.py)
        return make_batch(data="synthetic", loss="mse", batch=batch, n_in=shape.n_in(at),
                          n_out=shape.n_out(at), sparse=shape.sparse, seed=seed)
    # Token ids in (a language model: next tokens out), or a factory's dense inputs or images with classes.
    return make_batch(data="synthetic", loss="ce", batch=batch, n_in=shape.n_in(at), n_out=shape.n_out(at),
                      sparse=shape.sparse, seed=seed, seq=seq if shape.sparse else None)
