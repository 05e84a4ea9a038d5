"""Real torch models built from a spec, with submodule paths equal to the spec's layer names.

:func:`build_model` turns a loaded :class:`~paramcalc.Spec` into a ``torch.nn.Module`` at given
widths, so that everything keyed by a spec name (a derivation, the emitted ``init_parameters`` and
``param_groups``, the verifier) finds its tensor with ``model.get_submodule(layer)``:

- each layer's module comes from its kind (:meth:`paramcalc.kinds.LayerKind.torch_module`): a
  ``linear`` layer is an ``nn.Linear(fan_in, fan_out)``, an ``embedding`` an
  ``nn.Embedding(vocab, dim)``, a norm a :class:`~paramcalc.modules.LayerNorm` /
  :class:`~paramcalc.modules.RMSNorm` whose ``weight`` and ``bias`` are the spec's gain and bias; a
  layer with ``tie: owner`` shares the owner's ``weight`` Parameter (``named_parameters()`` lists it
  once, under the owner's name; where the tied layer comes first in module order it holds the
  Parameter as a plain attribute);
- ``model.named_parameters()`` yields exactly the spec's tensors, with their torch shapes.

The model runs the spec's forward plan (:attr:`Spec.topology`, :mod:`paramcalc.spec.topology`): a
*chain* (:class:`ChainModel`, input a float tensor, or token ids when the first weight layer reads
them) or a pre-norm *transformer* (:class:`TransformerModel`, input token ids ``(batch, seq)``,
output logits ``(batch, seq, vocab)``, causal attention). The first-step calculus reads the same
plan, so where the activation sits cannot differ between what trains and what is predicted.
:func:`set_attention_scales` sets every attention layer's logit scale from the derivation.

Parameters keep torch's default init: re-initialise them with the derivation (the emitted
``init_parameters``). This module imports torch; nothing on the ``paramcalc derive`` path imports
it.

>>> import paramcalc
>>> from paramcalc.models import build_model
>>> model = build_model(paramcalc.load_spec("examples/mlp.yaml"), {"d": 64})  # doctest: +SKIP
>>> model.get_submodule("fc2")                                               # doctest: +SKIP
Linear(in_features=64, out_features=64, bias=True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
import torch
from torch import nn

from paramcalc.engine.derivation import resolve_widths
from paramcalc.errors import Problem, SpecError
from paramcalc.modules import ACTIVATIONS, Attention, LayerNorm, Mlp, OneHotLinear, RMSNorm
from paramcalc.spec import Spec, load_spec
from paramcalc.spec.topology import Step

__all__ = [
    "ACTIVATIONS",
    "SpecLike",
    "Attention",
    "Branch",
    "ChainModel",
    "LayerNorm",
    "Mlp",
    "OneHotLinear",
    "RMSNorm",
    "TransformerModel",
    "build_model",
    "chain_problems",
    "is_chain",
    "is_transformer",
    "parameter_shapes",
    "set_attention_scales",
    "set_residual_scales",
    "transformer_problems",
]

#: A loaded spec, or anything :func:`paramcalc.load_spec` accepts (a path, a mapping).
SpecLike = Spec | Mapping[str, Any] | str | os.PathLike[str]



class _SpecModule(nn.Module):
    """A model built from a spec: ``spec`` and ``widths`` (every width symbol's integer value)
    are kept as attributes; ``forward`` follows a plan of steps over the spec's layers."""

    def __init__(self, spec: Spec, widths: Mapping[str, int], activation: str) -> None:
        super().__init__()
        self.spec = spec
        self.widths = dict(widths)
        self.activation = activation
        self._plan: tuple[Step, ...] = ()
        self._ties: tuple[tuple[str, str], ...] = ()  # (using layer, owning layer)
        #: Branch multiplier of each repeat whose count scales (``{"blocks.residual": 0.25}``), 1 until
        #: set from the derivation (:func:`set_residual_scales`); a branch inside such a repeat
        #: computes ``x + scale * branch(norm(x))``.
        self.residual_scales: dict[str, float] = {}
        self._residual_keys: dict[str, str] = {}  # branch layer -> its repeat's residual key

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> _SpecModule:
        # Every conversion (.to, .double, .to_empty, ...) goes through here. Some give each module a
        # new Parameter of its own (meta -> a real device does), which would untie tied weights:
        # share the owner's again afterwards.
        super()._apply(fn, recurse)
        self._share_tied()
        return self

    def _share_tied(self) -> None:
        """Make each tied use hold its owner's weight (as a Parameter when the owner comes first in
        module order, else as a plain attribute, so that the owner's name lists it)."""
        for user, owner in self._ties:
            weight = self.get_submodule(owner).weight
            module = self.get_submodule(user)
            if "weight" in module._parameters:
                module._parameters["weight"] = weight
            else:
                object.__setattr__(module, "weight", weight)


    def _residual(self, x: torch.Tensor, step: Step) -> torch.Tensor:
        """``x + scale * branch(norm(x))``, the branch multiplier of the step's repeat (1 if none)."""
        h = self.get_submodule(step.norm)(x) if step.norm else x
        branch = self.get_submodule(step.layer)(h)
        scale = self.residual_scales.get(self._residual_keys.get(step.layer, ""), 1.0)
        return x + (branch if scale == 1.0 else scale * branch)


def _run_chain(module: nn.Module, steps: Sequence[Step], activation: str, x: torch.Tensor) -> torch.Tensor:
    act = ACTIVATIONS[activation]
    for step in steps:
        if step.op == "act":
            x = act(x)
        elif step.op == "pool":
            x = x.flatten(2).mean(-1)
        elif step.op == "residual":
            x = module._residual(x, step)  # type: ignore[operator]
        else:
            x = module.get_submodule(step.layer)(x)
    return x


class ChainModel(_SpecModule):
    """A chain of linear / embedding layers with norms between them (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_chain(self, self._plan, self.activation, x)


class Branch(nn.ModuleDict):
    """One block of a chain's ``residual: true`` repeat: its layers, run by their own steps (the
    model adds ``scale *`` its output to the stream)."""

    def __init__(self, steps: Sequence[Step], activation: str) -> None:
        super().__init__()
        self._steps, self.activation = tuple(steps), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_chain(self, self._steps, self.activation, x)


class TransformerModel(_SpecModule):
    """A pre-norm decoder built from a spec (see the module docstring); input token ids."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or torch.is_floating_point(idx):
            raise ValueError(f"expected token ids of shape (batch, seq), got {tuple(idx.shape)} "
                             f"{idx.dtype}")
        act = ACTIVATIONS[self.activation]
        x = idx
        for step in self._plan:
            if step.op == "embed":
                x = self.get_submodule(step.layer)(idx)
            elif step.op == "position":
                emb = self.get_submodule(step.layer)
                t = idx.shape[1]
                if t > emb.num_embeddings:
                    raise ValueError(f"sequence length {t} exceeds {step.layer}'s "
                                     f"{emb.num_embeddings} positions")
                x = x + emb(torch.arange(t, device=idx.device))
            elif step.op == "residual":
                x = self._residual(x, step)
            elif step.op == "act":
                x = act(x)
            else:
                x = self.get_submodule(step.layer)(x)
        return x

    def attention_layers(self) -> dict[str, Attention]:
        """The attention modules by spec layer name."""
        return {n: m for n, m in self.named_modules() if isinstance(m, Attention)}


# Structure checks ---------------------------------------------------------------------------------
def chain_problems(spec: SpecLike) -> list[Problem]:
    """Why ``spec`` is not a chain (empty when it is); see :mod:`paramcalc.spec.topology`."""
    return list(load_spec(spec).topology.chain_problems)


def is_chain(spec: SpecLike) -> bool:
    """Whether :func:`build_model` builds ``spec`` as a chain of linear / embedding layers."""
    return load_spec(spec).topology.family == "chain"


def transformer_problems(spec: SpecLike) -> list[Problem]:
    """Why ``spec`` is not a transformer (empty when it is); see :mod:`paramcalc.spec.topology`."""
    return list(load_spec(spec).topology.transformer_problems)


def is_transformer(spec: SpecLike) -> bool:
    """Whether :func:`build_model` builds ``spec`` as a transformer."""
    return not transformer_problems(spec)


# Building -----------------------------------------------------------------------------------------
class _Dims:
    """Integer values of a spec's dimension expressions at given widths."""

    def __init__(self, spec: Spec, widths: Mapping[str, int]) -> None:
        self.spec = spec
        self.subs = {w.symbol: sympy.Integer(widths[w.name]) for w in spec.widths.values()}

    def __call__(self, expr: sympy.Expr, where: str) -> int:
        value = sympy.sympify(expr).xreplace(self.subs)
        if not (value.is_Integer and value > 0):
            raise SpecError([Problem(where, f"{expr} is {value} at these widths; expected a "
                                            "positive integer")], source=self.spec.source)
        return int(value)


def _attach(root: nn.Module, path: str, module: nn.Module, spec: Spec, where: str,
            containers: Mapping[str, nn.Module] | None = None) -> None:
    """Place ``module`` at submodule path ``path``, creating containers for missing parents (the one
    ``containers`` gives for that parent's path, else an ``nn.ModuleDict``)."""
    parent = root
    *parents, leaf = path.split(".")
    for i, part in enumerate(parents):
        child = parent._modules.get(part)
        if child is None:
            child = (containers or {}).get(".".join(parents[:i + 1]))
            child = nn.ModuleDict() if child is None else child  # (an empty ModuleDict is falsy)
            _add(parent, part, child, spec, where, path)
        parent = child
    _add(parent, leaf, module, spec, where, path)


def _add(parent: nn.Module, name: str, module: nn.Module, spec: Spec, where: str, path: str) -> None:
    if name in parent._modules:
        raise SpecError([Problem(where, f"submodule path {path!r} is used twice")],
                        source=spec.source)
    try:
        parent.add_module(name, module)
    except (KeyError, TypeError) as exc:
        raise SpecError([Problem(where, f"cannot use {path!r} as a submodule path: "
                                        f"{exc.args[0] if exc.args else exc}")],
                        source=spec.source) from None


def _assemble(root: nn.Module, spec: Spec, dims: _Dims, factory: dict[str, object]) -> None:
    """Attach every layer's module at its path, then share tied weights."""
    # A block (attention, mlp) is listed after its projections but must exist before them, as
    # their parent. Otherwise keep spec order, so that named_parameters() lists tensors in the
    # spec's order and a tied weight under its owner's name.
    position = {layer.name: float(i) for i, layer in enumerate(spec.layers)}
    for layer in spec.layers:
        if "projections" in layer.attrs:
            position[layer.name] = min(position[p] for p in layer.attrs["projections"].values()) - 0.5
    # A residual block of a chain is the module that runs its layers.
    branches = {block: Branch(steps, spec.activation) for block, steps in spec.topology.branches}
    for layer in sorted(spec.layers, key=lambda layer: position[layer.name]):
        module = layer.definition.torch_module(layer, dims, factory, spec.activation)
        if module is None:  # a packed projection: its block holds its tensors
            continue
        _attach(root, layer.name, module, spec, layer.path, branches)
    tied = [layer for layer in spec.layers if layer.attrs.get("tie")]
    for layer in tied:
        # The spec checked that the stored shapes agree.
        root.get_submodule(layer.name).weight = root.get_submodule(layer.attrs["tie"]).weight
    listed = {name for name, _ in root.named_parameters()}
    for layer in tied:
        if f"{layer.attrs['tie']}.weight" not in listed:
            # The user comes first in module order, so named_parameters() would list the shared
            # tensor under the user's name: keep it on the user as a plain attribute instead.
            user = root.get_submodule(layer.name)
            object.__setattr__(user, "weight", user._parameters.pop("weight"))
    if isinstance(root, _SpecModule):
        root._ties = tuple((layer.name, layer.attrs["tie"]) for layer in tied)


def build_model(
    spec: SpecLike,
    widths: Mapping[str, int] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Build ``spec`` as a torch module at ``widths`` (missing symbols take the spec's values).

    Returns a :class:`ChainModel` or a :class:`TransformerModel` (see the module docstring) whose
    submodule paths are the spec's layer names and whose ``named_parameters()`` are exactly the
    spec's tensors. Raises :class:`~paramcalc.SpecError` for unknown or bad widths, and when the
    spec is neither a chain nor a transformer, naming why for both.
    """
    spec = load_spec(spec)
    values = resolve_widths(spec, widths)
    spec = spec.at_depth(values)  # a repeat whose count scales: as many blocks as widths say
    _check_repeats(spec, values)
    factory: dict[str, object] = {}
    if device is not None:
        factory["device"] = device
    if dtype is not None:
        factory["dtype"] = dtype
    plan = spec.topology
    if plan.family is None:
        raise SpecError(_neither(plan.chain_problems, plan.transformer_problems), source=spec.source)
    cls = ChainModel if plan.family == "chain" else TransformerModel
    model = cls(spec, values, spec.activation)
    _assemble(model, spec, _Dims(spec, values), factory)
    model._plan = plan.steps
    model._residual_keys = {
        step.layer: f"{block.name}.residual" for step in plan.steps
        if step.op == "residual" and (block := spec.depth_block(step.layer)) is not None
    }
    model.residual_scales = dict.fromkeys(sorted(set(model._residual_keys.values())), 1.0)
    return model


def _check_repeats(spec: Spec, values: Mapping[str, int]) -> None:
    """A fixed ``repeat:`` count is fixed when the spec is loaded; a different value cannot apply
    (a scaling one builds as many blocks as ``values`` says)."""
    from paramcalc.spec.builder import repeat_counts

    if spec.model is None:
        return
    problems = [
        Problem(f"widths.{name}", f"{name} is a repeat count, fixed at {spec.widths[name].value} "
                                  f"when the spec was loaded; got {values[name]}. Load the spec "
                                  f"with {name}: {values[name]} to build that many blocks")
        for name in sorted(repeat_counts(spec.model.layers))
        if name in values and values[name] != spec.widths[name].value and not spec.widths[name].depth
    ]
    if problems:
        raise SpecError(problems, source=spec.source)


def _neither(chain: Sequence[Problem], transformer: Sequence[Problem]) -> list[Problem]:
    lead = Problem("layers", "build_model understands two families, a chain of linear / embedding "
                             "layers and a pre-norm transformer; this spec is neither")
    tag = [Problem(p.path, f"not a chain: {p.message}") for p in chain[:3]]
    tag += [Problem(p.path, f"not a transformer: {p.message}") for p in transformer[:3]]
    return [lead, *tag]


def set_attention_scales(model: nn.Module, scales: Mapping[str, float]) -> None:
    """Set every attention layer's logit scale from ``d.evaluate_constants(widths)``.

    ``scales`` maps ``"<attention layer>.scale"`` to a number; every :class:`Attention` in
    ``model`` must have one (a ``KeyError`` names the first that has none).
    """
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            key = f"{name}.scale"
            if key not in scales:
                raise KeyError(f"no attention scale {key!r} (have: {', '.join(scales) or 'none'})")
            module.scale = float(scales[key])


def set_residual_scales(model: nn.Module, scales: Mapping[str, float]) -> list[str]:
    """Set the branch multipliers of a model :func:`build_model` built from ``scales``
    (``d.evaluate_constants(widths)``, or the emitted ``residual_scales(widths)``); return the keys
    the model has no place for (a model of the user's own: its blocks must apply them)."""
    own = getattr(model, "residual_scales", None)
    keys = [k for k in scales if k.endswith(".residual")]
    if not isinstance(own, dict):
        return keys
    missing = [k for k in keys if k not in own]
    own.update({k: float(scales[k]) for k in keys if k in own})
    return missing


def parameter_shapes(spec: SpecLike, widths: Mapping[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """The torch shape of every spec tensor at ``widths``, without building a model."""
    spec = load_spec(spec)
    values = resolve_widths(spec, widths)
    spec = spec.at_depth(values)
    dims = _Dims(spec, values)
    return {t.name: tuple(dims(s, t.path) for s in t.shape) for t in spec.tensors}

