"""Real torch models built from a spec, with submodule paths equal to the spec's layer names.

:func:`build_model` turns a loaded :class:`~paramcalc.Spec` into a ``torch.nn.Module`` at given
widths, so that everything keyed by a spec name (a derivation, the emitted ``init_parameters`` and
``param_groups``, the verifier) finds its tensor with ``model.get_submodule(layer)``:

- a ``linear`` layer is an ``nn.Linear(fan_in, fan_out)``, an ``embedding`` an
  ``nn.Embedding(vocab, dim)``, a norm a :class:`LayerNorm` / :class:`RMSNorm` whose ``weight``
  and ``bias`` are the spec's gain and bias; a layer with ``tie: owner`` shares the owner's
  ``weight`` Parameter (``named_parameters()`` lists it once, under the owner's name; where the
  tied layer comes first in module order it holds the Parameter as a plain attribute);
- ``model.named_parameters()`` yields exactly the spec's tensors, with their torch shapes.

Two families are understood:

chain
    Linear and embedding layers whose fan-ins and fan-outs chain (norms anywhere in between):
    ``x -> W1 -> [norms] -> act -> W2 -> ... -> W_L -> [norms]``. The activation
    (``spec.activation``) is applied to the input of every weight layer that follows a linear
    layer (not after the last one, and not after an embedding). Input: a float tensor, or long
    token ids when the first weight layer is an embedding or a linear layer with ``input: sparse``.
transformer
    Token (and optionally position) embeddings, then residual sub-blocks, then readout layers:
    a norm followed by ``attention`` or ``mlp`` is a pre-norm residual branch
    (``x = x + branch(norm(x))``), other norms act on the stream (``ln_f``), and linear layers
    after the blocks form the readout (``tie: wte`` shares the token embedding). Input: token
    ids ``(batch, seq)``; output: logits ``(batch, seq, vocab)``. Attention is causal.

:class:`Attention` takes its logit scale as the attribute ``scale`` (set it from the derivation's
``d.evaluate_constants(widths)["<layer>.scale"]``; :func:`set_attention_scales` does it for every
attention layer) and records its pre-softmax logits when ``record_logits`` is true.

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

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from paramcalc.engine.derivation import resolve_widths
from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Spec, load_spec
from paramcalc.spec.topology import Step

__all__ = [
    "ACTIVATIONS",
    "SpecLike",
    "Attention",
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
    "transformer_problems",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "identity": lambda x: x,
}
#: A loaded spec, or anything :func:`paramcalc.load_spec` accepts (a path, a mapping).
SpecLike = Spec | Mapping[str, Any] | str | os.PathLike[str]


# Modules ------------------------------------------------------------------------------------------
class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension; ``weight`` is the gain, ``bias`` optional."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5, **factory: object) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=True, bias=bias, **factory)


class RMSNorm(nn.Module):
    """``x / rms(x) * weight (+ bias)`` over the last dimension (Zhang & Sennrich 2019).

    Unlike ``torch.nn.RMSNorm`` it may carry a bias, as a spec's ``rmsnorm`` with ``bias: true``.
    """

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-6, **factory: object) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, **factory))
        self.bias = nn.Parameter(torch.zeros(dim, **factory)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, bias={self.bias is not None}, eps={self.eps}"


class Attention(nn.Module):
    """Causal multi-head self-attention whose projections are child modules named by the spec.

    ``q, k, v: d_model -> n_heads*d_head`` (or one fused ``qkv`` of three times that width) and
    ``o: n_heads*d_head -> d_model`` are attached as children under the spec's names (default
    ``q``, ``k``, ``v``, ``qkv``, ``o``). Logits are ``scale * q . k``: ``scale`` is a plain float
    attribute, ``1/sqrt(d_head)`` until set (e.g. to muP's ``sqrt(d_head_base)/d_head``).

    With ``record_logits = True`` the forward pass computes attention explicitly (same result as
    ``scaled_dot_product_attention``) and keeps ``last_logits``, the pre-softmax logits
    ``scale * q k^T`` of shape ``(batch, heads, seq, seq)`` (detached; future positions included,
    before masking), and ``last_logit_rms``, their root mean square over the causal (unmasked)
    entries, a 0-d tensor.
    """

    def __init__(self, n_heads: int, d_head: int, names: Mapping[str, str], fused: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_head
        self.fused = fused
        self.names = dict(names)
        self.scale: float = 1.0 / math.sqrt(d_head)
        self.causal = True
        self.record_logits = False
        self.last_logits: torch.Tensor | None = None
        self.last_logit_rms: torch.Tensor | None = None

    def _proj(self, key: str) -> nn.Module:
        return getattr(self, self.names[key])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if self.fused:
            q, k, v = self._proj("qkv")(x).chunk(3, dim=-1)
        else:
            q, k, v = self._proj("q")(x), self._proj("k")(x), self._proj("v")(x)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.record_logits:
            logits = (q @ k.transpose(-2, -1)) * self.scale
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device)
            if self.causal:
                mask = mask.tril()
            self.last_logits = logits.detach()
            self.last_logit_rms = logits.detach()[..., mask].pow(2).mean().sqrt()
            y = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        return self._proj("o")(y.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, d_head={self.d_head}, scale={self.scale:.6g}"


class Mlp(nn.Module):
    """Transformer MLP: ``proj(act(fc(x)))``, or ``proj(act(gate(x)) * fc(x))`` when gated.

    The projections are child modules under the spec's names (default ``fc``, ``gate``, ``proj``).
    """

    def __init__(self, names: Mapping[str, str], gated: bool, activation: str) -> None:
        super().__init__()
        self.names = dict(names)
        self.gated = gated
        self.activation = activation

    def _proj(self, key: str) -> nn.Module:
        return getattr(self, self.names[key])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        if self.gated:
            h = act(self._proj("gate")(x)) * self._proj("fc")(x)
        else:
            h = act(self._proj("fc")(x))
        return self._proj("proj")(h)


class OneHotLinear(nn.Linear):
    """An ``nn.Linear`` whose input may be token ids (a spec's ``input: sparse``).

    Ids stand for one-hot vectors, so ``W @ onehot(i)`` is column ``i`` of ``W``: the layer reads
    columns instead of multiplying. It is still a module call, so forward hooks (the emitted
    ``apply_multipliers``, the verifier's recorders) see its input and output.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(x):
            return super().forward(x)
        out = self.weight.t()[x]
        return out + self.bias if self.bias is not None else out


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


class ChainModel(_SpecModule):
    """A chain of linear / embedding layers with norms between them (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        for step in self._plan:
            x = act(x) if step.op == "act" else self.get_submodule(step.layer)(x)
        return x


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
                h = self.get_submodule(step.norm)(x) if step.norm else x
                x = x + self.get_submodule(step.layer)(h)
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


def _attach(root: nn.Module, path: str, module: nn.Module, spec: Spec, where: str) -> None:
    """Place ``module`` at submodule path ``path``, creating containers for missing parents."""
    parent = root
    *parents, leaf = path.split(".")
    for part in parents:
        child = parent._modules.get(part)
        if child is None:
            child = nn.ModuleDict()
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
    for layer in sorted(spec.layers, key=lambda layer: position[layer.name]):
        module = layer.definition.torch_module(layer, dims, factory, spec.activation)
        _attach(root, layer.name, module, spec, layer.path)
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
    return model


def _repeat_symbols(layers: Sequence[object]) -> set[str]:
    found: set[str] = set()
    for layer in layers:
        if layer.kind == "repeat":
            if isinstance(layer.repeat, str):
                found.add(layer.repeat)
            found |= _repeat_symbols(layer.layers)
    return found


def _check_repeats(spec: Spec, values: Mapping[str, int]) -> None:
    """A ``repeat:`` count is fixed when the spec is loaded; a different value cannot apply."""
    if spec.model is None:
        return
    problems = [
        Problem(f"widths.{name}", f"{name} is a repeat count, fixed at {spec.widths[name].value} "
                                  f"when the spec was loaded; got {values[name]}. Load the spec "
                                  f"with {name}: {values[name]} to build that many blocks")
        for name in sorted(_repeat_symbols(spec.model.layers))
        if name in values and values[name] != spec.widths[name].value
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


def parameter_shapes(spec: SpecLike, widths: Mapping[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """The torch shape of every spec tensor at ``widths``, without building a model."""
    spec = load_spec(spec)
    dims = _Dims(spec, resolve_widths(spec, widths))
    return {t.name: tuple(dims(s, t.path) for s in t.shape) for t in spec.tensors}

