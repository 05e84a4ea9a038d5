"""The forward plan of a spec: which family it is, and the order its layers run in.

Computed once per spec (:attr:`Spec.topology <paramcalc.spec.Spec.topology>`) from the layer
kinds' roles (:mod:`paramcalc.kinds.base`); the torch models, the first-step calculus and the
verifier all read this one plan, so where an activation or a residual branch sits can never differ
between the model that trains and the calculus that predicts it. Two families:

chain
    Weight layers (linear, embedding) whose fan-ins and fan-outs chain, with gain layers (norms)
    anywhere in between: ``x -> W1 -> [norms] -> act -> W2 -> ... -> W_L -> [norms]``. The
    activation is applied to the input of every weight layer that follows an activating one (a
    linear layer; not after an embedding), after any norms in between. Token-reading layers
    (embeddings) only first. The blocks of a ``residual: true`` repeat are residual branches,
    ``x = x + r * block(x)`` (``r`` the repeat's branch multiplier where its count scales, else 1):
    each block runs its own layers by the same rule, starting and ending without an activation, so
    the stream between blocks is never activated (as a transformer's is not) and the layer after the
    last block reads it as it is. A repeat whose count scales must be residual in a chain.
transformer
    Token (and optionally position) embeddings, then residual branches (``x = x + branch(norm(x))``
    for a norm followed by a block kind, attention or MLP; ``x + branch(x)`` without one), other
    gain layers on the stream (``ln_f``), then readout weight layers with the activation between
    them (``tie: wte`` shares the token embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import sympy

from paramcalc.errors import Problem

if TYPE_CHECKING:
    from paramcalc.spec.architecture import Layer, Spec

__all__ = ["Step", "Topology", "topology"]


@dataclass(frozen=True)
class Step:
    """One step of a forward plan: apply ``layer`` (a module path) as ``op``.

    ``op`` is ``weight`` or ``gain`` (apply the layer), ``act`` (the spec's activation), ``pool``
    (average a convolution's features over positions: ``(batch, c, *pixels) -> (batch, c)``), ``embed``
    (token ids -> stream), ``position`` (add a position table) or ``residual`` (``x + layer(norm(x))``;
    in a chain ``layer`` is a block, ``blocks.0``, whose own steps are :attr:`Topology.branches`).
    """

    op: Literal["weight", "gain", "act", "pool", "embed", "position", "residual"]
    layer: str = ""
    norm: str = ""


@dataclass(frozen=True)
class Topology:
    """A spec's family (``chain``, ``transformer`` or ``None``), its plan, and why it is not the
    other family (or neither)."""

    family: Literal["chain", "transformer"] | None
    steps: tuple[Step, ...]
    chain_problems: tuple[Problem, ...]
    transformer_problems: tuple[Problem, ...]
    #: A chain's residual blocks and their own steps, layer names relative to the block.
    branches: tuple[tuple[str, tuple[Step, ...]], ...] = ()


def same(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether two dimension expressions are equal as polynomials."""
    return a == b or sympy.expand(a - b) == 0


def topology(spec: Spec) -> Topology:
    chain = chain_problems(spec)
    plan, transformer = _transformer_plan(spec)
    if not chain:
        steps, branches = _chain_plan(spec)
        return Topology("chain", tuple(steps), (), tuple(transformer), branches)
    family = None if transformer else "transformer"
    return Topology(family, tuple(plan), tuple(chain), tuple(transformer))


def chain_problems(spec: Spec) -> list[Problem]:
    problems: list[Problem] = []
    features: sympy.Expr | None = None  # width of the signal between layers; None before any
    first_weight = True
    for layer in spec.layers:
        kind = layer.definition
        if kind.chain_role is None or "block" in layer.attrs:
            block = layer.attrs.get("block", layer.name)
            what = spec.layer(block).kind if "block" in layer.attrs else layer.kind
            return [Problem(layer.path, f"{block!r} is a layer of kind {what}, not part of a chain: "
                                        "chains of linear, embedding and norm layers only")]
        if kind.chain_role == "gain":
            if features is not None and not same(kind.width_in(layer), features):
                problems.append(Problem(layer.path, f"norm {layer.name!r} has dim "
                                                    f"{kind.width_in(layer)}, but the signal there has "
                                                    f"width {features}"))
            continue
        if kind.reads_ids and not first_weight:
            problems.append(Problem(layer.path, f"{layer.kind} {layer.name!r} must be the first "
                                                "weight layer of a chain (it reads token ids)"))
        if features is not None and not same(kind.width_in(layer), features):
            problems.append(Problem(layer.path, f"{layer.name!r} has fan_in {kind.width_in(layer)}, but "
                                                f"the previous layer's fan_out is {features}"))
        features = kind.width_out(layer)
        first_weight = False
    if features is None:
        problems.append(Problem("layers", "a chain needs at least one linear or embedding layer"))
    return _branch_problems(spec) + problems  # the cause first: a block that changes the width


def _branch_of(blocks: frozenset[str], name: str) -> str | None:
    """The residual block (of ``blocks``) holding layer ``name``: one of its name's prefixes."""
    if not blocks:
        return None
    parts = name.split(".")
    return next((p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in blocks), None)


def _branch_problems(spec: Spec) -> list[Problem]:
    """A residual block must map the stream to its own width; a repeat whose count scales must be
    residual (the depth rules are those of residual branches, :mod:`paramcalc.engine.depth`)."""
    problems = [Problem("layers", f"repeat {b.name!r} scales with depth ({b.width}); in a chain its blocks "
                                  "must be residual branches: add `residual: true` to it")
                for b in spec.depth_blocks if f"{b.name}.0" not in spec.residual_blocks]
    for block in (b for b in spec.residual_blocks if b.endswith(".0")):  # one block says it for its repeat
        inside = [layer for layer in spec.layers if layer.name.startswith(f"{block}.")
                  and layer.definition.chain_role == "weight"]
        if not inside:
            continue
        first, last = inside[0], inside[-1]
        if _branch_of(frozenset(spec.residual_blocks), block) is not None:
            problems.append(Problem(first.path, f"{block!r} is a residual block inside another: one level"))
        elif not same(first.definition.width_in(first), last.definition.width_out(last)):
            problems.append(Problem(last.path, f"residual block {block!r} maps width "
                                               f"{first.definition.width_in(first)} to "
                                               f"{last.definition.width_out(last)}; x + block(x) needs them "
                                               "equal"))
        elif first.definition.spatial:
            problems.append(Problem(first.path, f"residual block {block!r}: convolutional branches are not "
                                                "supported yet"))
    return problems


def _chain_plan(spec: Spec) -> tuple[list[Step], tuple[tuple[str, tuple[Step, ...]], ...]]:
    plan: list[Step] = []
    branches: dict[str, list[Step]] = {}
    blocks = frozenset(spec.residual_blocks)
    activate = spatial = False
    for layer in spec.layers:
        kind, block = layer.definition, _branch_of(blocks, layer.name)
        if block is not None:
            if block not in branches:  # the stream enters the block as it is
                plan.append(Step("residual", block))
                branches[block], inner = [], False
            inner = _chain_step(branches[block], layer.name[len(block) + 1:], kind, inner)
            activate = False  # the stream after a block is read as it is
            continue
        activate = _chain_step(plan, layer.name, kind, activate, spatial)
        spatial = kind.spatial if kind.chain_role == "weight" else spatial
    return plan, tuple((b, tuple(steps)) for b, steps in branches.items())


def _chain_step(plan: list[Step], name: str, kind: Any, activate: bool, spatial: bool = False) -> bool:
    """Append one layer's steps; return whether the next weight layer is activated."""
    if kind.chain_role == "gain":
        plan.append(Step("gain", name))
        return activate
    if activate:
        plan.append(Step("act"))
    if spatial and not kind.spatial:
        plan.append(Step("pool"))
    plan.append(Step("weight", name))
    return bool(kind.activates)


def _transformer_plan(spec: Spec) -> tuple[list[Step], list[Problem]]:
    if not any(layer.definition.mixes_tokens for layer in spec.layers):
        return [], [Problem("layers", "a transformer needs at least one attention layer")]
    top = [layer for layer in spec.layers if "block" not in layer.attrs]
    if not top or not top[0].definition.reads_ids:
        return [], [Problem(top[0].path if top else "layers",
                            "a transformer starts with its token embedding")]
    width = top[0].definition.width_out(top[0])
    plan, problems = [Step("embed", top[0].name)], []
    i = 1
    while i < len(top) and top[i].definition.reads_ids:
        if not same(top[i].definition.width_out(top[i]), width):
            problems.append(Problem(top[i].path, f"position embedding {top[i].name!r} has dim "
                                                 f"{top[i].definition.width_out(top[i])}, expected {width}"))
        plan.append(Step("position", top[i].name))
        i += 1
    _Stream(width, plan, problems).run(top[i:])
    return plan, problems


class _Stream:
    """The part of a transformer after its embeddings: residual branches, then the readout."""

    def __init__(self, width: sympy.Expr, plan: list[Step], problems: list[Problem]) -> None:
        self.width, self.plan, self.problems = width, plan, problems
        self.readout: sympy.Expr | None = None  # signal width once the readout layers have begun

    def expect(self, layer: Layer, what: str, value: sympy.Expr, want: sympy.Expr) -> None:
        if not same(value, want):
            self.problems.append(Problem(layer.path, f"{what} {value}, expected {want}"))

    def run(self, layers: list[Layer]) -> None:
        i = 0
        while i < len(layers):
            layer, kind = layers[i], layers[i].definition
            here = self.width if self.readout is None else self.readout
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if kind.reads_ids:
                self.problems.append(Problem(
                    layer.path, f"embedding {layer.name!r} must come before the blocks (token "
                                "embedding first, then positions)"))
            elif kind.residual_branch:
                self.branch(layer, "")
            elif kind.chain_role == "gain":
                self.expect(layer, f"norm {layer.name!r} has dim", kind.width_in(layer), here)
                if self.readout is None and nxt is not None and nxt.definition.residual_branch:
                    self.branch(nxt, layer.name)
                    i += 2
                    continue
                self.plan.append(Step("gain", layer.name))
            else:  # readout weight layers, the activation between them
                self.expect(layer, f"{layer.name!r} has fan_in", kind.width_in(layer), here)
                if self.readout is not None:
                    self.plan.append(Step("act"))
                self.plan.append(Step("weight", layer.name))
                self.readout = kind.width_out(layer)
            i += 1

    def branch(self, layer: Layer, norm: str) -> None:
        if self.readout is not None and not norm:
            self.problems.append(Problem(layer.path, f"{layer.name!r} comes after the readout"))
        else:
            self.expect(layer, f"{layer.name!r} has d_model", layer.definition.width_in(layer), self.width)
        self.plan.append(Step("residual", layer.name, norm=norm))
