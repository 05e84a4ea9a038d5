"""What each module of a live torch model is, as spec entries (see :mod:`paramcalc.infer`).

Recognised: ``nn.Linear``; Hugging Face's ``Conv1D`` (weight stored ``(fan_in, fan_out)``: a linear
layer with ``layout: in_out``); ``nn.Embedding``; ``nn.Conv1d/2d/3d``; normalisation layers (any
module whose class name contains ``Norm`` and whose parameters are a ``weight`` and optional
``bias`` vector: LayerNorm, RMSNorm, BatchNorm, GroupNorm, HF's ``LlamaRMSNorm``); attention
modules that expose ``head_dim`` and their q/k/v/o projections as child modules (Hugging Face's
GPT-2, Llama, ViT, ... attention) and torch's ``nn.MultiheadAttention`` (a ``packed`` attention),
whose logit scale the derivation then gives; and raw
``nn.Parameter``s with at most one dimension that grows with width (class tokens, position
tables), as ``parameter`` entries. Anything else is named in the error, with what would fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from paramcalc.errors import Problem
from paramcalc.kinds.attention import PROJECTION_NAMES

__all__ = ["PROJECTION_NAMES", "Recogniser"]


def _is_conv1d_hf(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2): a linear layer whose weight is ``(fan_in, fan_out)``."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
        and module.weight.dim() == 2


def _is_norm(module: nn.Module) -> bool:
    params = {k for k, v in module._parameters.items() if v is not None}
    return "Norm" in type(module).__name__ and "weight" in params and params <= {"weight", "bias"} \
        and all(v.dim() == 1 for v in module._parameters.values() if v is not None)


def _norm_kind(module: nn.Module, bias: bool) -> str:
    """``layernorm`` / ``rmsnorm`` by class name; other norms (batch, group) as ``norm``, whose
    tensors (a gain and a bias vector) are what the derivation needs."""
    cls = type(module).__name__
    if "RMSNorm" in cls and not bias:
        return "rmsnorm"
    if "LayerNorm" in cls and bias:
        return "layernorm"
    return "norm"


class Recogniser:
    """Walks the base build's modules; ``inference.dim(read, where)`` turns a number read from each
    build into a spec expression, ``inference.scales(expr)`` says whether it grows with width
    (:class:`paramcalc.infer.Inference`)."""

    def __init__(self, model: nn.Module, inference: Any) -> None:
        self.model = model
        self.dim: Callable[[Callable[[nn.Module], int], str], Any] = inference.dim
        self.scales: Callable[[Any], bool] = inference.scales
        self.entries: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.done: set[str] = set()  # module paths already described
        self.owners: dict[int, str] = {}  # id(parameter) -> the first name it has

    def run(self) -> None:
        for name, param in self.model.named_parameters(remove_duplicate=False):
            self.owners.setdefault(id(param), name)
        for path, module in self.model.named_modules():
            if path in self.done or not path and not module._parameters:
                continue
            self.module(path, module)

    def param_shape(self, name: str, i: int) -> Callable[[nn.Module], int]:
        return lambda m: int(m.get_parameter(name).shape[i])

    def attr(self, path: str, attr: str) -> Callable[[nn.Module], int]:
        return lambda m: int(getattr(m.get_submodule(path), attr))

    def tie(self, path: str, module: nn.Module) -> str | None:
        """The layer that owns ``module.weight``, if another layer does."""
        owner = self.owners.get(id(module.weight))
        if owner is None or owner == f"{path}.weight":
            return None
        return owner.rsplit(".", 1)[0]

    def module(self, path: str, module: nn.Module) -> None:
        from paramcalc.infer.attention import attention_entry

        if isinstance(module, nn.MultiheadAttention):
            self.multihead(path, module)
            return
        if attention_entry(self, path, module):
            return
        own = {k: v for k, v in module._parameters.items() if v is not None}
        if not own:
            return
        if isinstance(module, nn.Linear) or _is_conv1d_hf(module):
            self.linear(path, module)
        elif isinstance(module, nn.Embedding):
            self.embedding(path, module)
        elif isinstance(module, nn.modules.conv._ConvNd):
            self.conv(path, module)
        elif _is_norm(module):
            dim = self.dim(self.param_shape(f"{path}.weight", 0), f"{path}.weight")
            kind = _norm_kind(module, "bias" in own)
            entry = {"kind": kind, "name": path, "dim": dim}
            if kind == "norm" and "bias" in own:
                entry["bias"] = True
            self.entries.append(entry)
        else:
            for pname in own:
                self.raw(f"{path}.{pname}" if path else pname, module)

    def multihead(self, path: str, module: nn.MultiheadAttention) -> None:
        """torch's attention as a ``packed`` attention entry (q, k, v in its own ``in_proj_weight``)."""
        if not module._qkv_same_embed_dim or module.bias_k is not None:
            self.problems.append(Problem(path or "model", (
                "is an nn.MultiheadAttention with kdim/vdim of their own or add_bias_kv, which paramcalc "
                "cannot parametrize yet; use one with embed_dim-wide keys and values (packed q, k, v), "
                "or four nn.Linear (q, k, v, o) and F.scaled_dot_product_attention(..., scale=...)")))
            return
        w = f"{path}.in_proj_weight"
        entry: dict[str, Any] = {
            "kind": "attention", "name": path, "d_model": self.dim(self.attr(path, "embed_dim"), w),
            "n_heads": self.dim(self.attr(path, "num_heads"), f"{path}.num_heads"),
            "d_head": self.dim(self.attr(path, "head_dim"), f"{path}.head_dim"), "packed": True,
        }
        if module.in_proj_bias is not None:
            entry["bias"] = True
        self.entries.append(entry)
        self.done.add(f"{path}.out_proj")

    def linear(self, path: str, module: nn.Module, **extra: Any) -> None:
        in_out = _is_conv1d_hf(module)
        w = f"{path}.weight"
        fan_in = self.dim(self.param_shape(w, 0 if in_out else 1), w)
        fan_out = self.dim(self.param_shape(w, 1 if in_out else 0), w)
        entry: dict[str, Any] = {"name": path, "fan_in": fan_in, "fan_out": fan_out}
        if getattr(module, "bias", None) is not None:
            entry["bias"] = True
        if in_out:
            entry["layout"] = "in_out"
        tie = self.tie(path, module)
        if tie is not None:
            entry["tie"] = tie
        self.entries.append({**entry, **extra})

    def embedding(self, path: str, module: nn.Embedding) -> None:
        w = f"{path}.weight"
        entry = {"kind": "embedding", "name": path, "vocab": self.dim(self.param_shape(w, 0), w),
                 "dim": self.dim(self.param_shape(w, 1), w)}
        tie = self.tie(path, module)
        if tie is not None:
            entry["tie"] = tie
        self.entries.append(entry)

    def conv(self, path: str, module: nn.modules.conv._ConvNd) -> None:
        if module.transposed:
            self.problems.append(Problem(f"{path}.weight", f"{type(module).__name__} (a transposed "
                                         "convolution) has no kind yet; describe it in a spec by hand"))
            return
        kind = {1: "conv1d", 2: "conv2d", 3: "conv3d"}[len(module.kernel_size)]
        entry: dict[str, Any] = {
            "kind": kind, "name": path,
            "in_channels": self.dim(self.attr(path, "in_channels"), f"{path}.in_channels"),
            "out_channels": self.dim(self.attr(path, "out_channels"), f"{path}.out_channels"),
            "kernel_size": list(module.kernel_size),
        }
        if module.groups != 1:
            entry["groups"] = self.dim(self.attr(path, "groups"), f"{path}.groups")
        if module.bias is not None:
            entry["bias"] = True
        for key in ("stride", "padding"):
            value = getattr(module, key)
            if isinstance(value, tuple) and len(set(value)) == 1 and value[0]:
                entry[key] = int(value[0])
        self.entries.append(entry)

    def raw(self, name: str, module: nn.Module) -> None:
        """A raw parameter: a ``parameter`` entry if at most one of its dimensions scales."""
        param = self.model.get_parameter(name)
        if self.owners.get(id(param)) != name:
            self.problems.append(Problem(name, (
                f"is the same tensor as {self.owners[id(param)]}, a tie paramcalc can only follow "
                "between linear and embedding weights")))
            return
        shape = [self.dim(self.param_shape(name, i), name) for i in range(param.dim())]
        if any(s is None for s in shape):
            return
        scaling = [s for s in shape if self.scales(s)]
        if len(scaling) > 1 or (scaling and not self.scales(shape[-1])):
            self.problems.append(Problem(name, (
                f"a raw parameter of shape {shape} in a {type(module).__name__}: paramcalc cannot tell "
                "its fan-in from its fan-out (it infers raw tensors whose last dimension is the only one "
                "that grows, such as class tokens and position tables). Make it an nn.Linear, or write "
                "the model's spec by hand (kind: linear, layout: in_out for x @ W)")))
            return
        self.entries.append({"kind": "parameter", "name": name, "shape": shape})
        self.notes.append(f"{name}: a raw parameter, initialised N(0, init_std^2) by the derivation; "
                          "set `init: zeros` or `ones` in the spec if it starts constant")
