"""Recognising attention in a live model, so that its logit scale is derived and set.

An attention module is recognised when it exposes ``head_dim`` (Hugging Face's attention classes
all do) and its projections as child modules under one of the known name sets
(:data:`~paramcalc.infer.recognise.PROJECTION_NAMES`), all linear (``nn.Linear`` or HF ``Conv1D``)
of one layout, all with or all without bias. ``n_heads`` and ``n_kv_heads`` are read off the
projections' widths (``q: d_model -> n_heads*head_dim``, ``k: d_model -> n_kv_heads*head_dim``);
a fused ``qkv`` (GPT-2's ``c_attn``) is ``(n_heads + 2*n_kv_heads)*head_dim`` wide, with ``n_heads``
from the module's ``num_heads`` or its config. The logit scale is applied by setting the module's
``scaling`` attribute (HF) or ``scale`` (paramcalc's own modules): :mod:`paramcalc.torch`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["attention_entry", "heads_of"]


def _linear_out_in(module: nn.Module) -> tuple[int, int, bool] | None:
    """(fan_out, fan_in, in_out) of a linear module, None if it is not one."""
    from paramcalc.infer.recognise import _is_conv1d_hf

    if isinstance(module, nn.Linear):
        return module.weight.shape[0], module.weight.shape[1], False
    if _is_conv1d_hf(module):
        return module.weight.shape[1], module.weight.shape[0], True
    return None


def heads_of(module: nn.Module) -> int | None:
    """The number of query heads a module says it has (its attribute, or its HF config's)."""
    for attr in ("num_heads", "num_attention_heads", "n_heads", "n_head"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    config = getattr(module, "config", None)
    value = getattr(config, "num_attention_heads", None)
    return value if isinstance(value, int) else None


def _projections(module: nn.Module) -> tuple[tuple[str, ...], list[tuple[int, int, bool]]] | None:
    for names in __import__("paramcalc.infer.recognise", fromlist=["x"]).PROJECTION_NAMES:
        children = [getattr(module, n, None) for n in names]
        if any(not isinstance(c, nn.Module) for c in children):
            continue
        shapes = [_linear_out_in(c) for c in children]
        if any(s is None for s in shapes):
            continue
        biases = {getattr(c, "bias", None) is not None for c in children}
        if len(biases) != 1 or len({s[2] for s in shapes}) != 1:  # type: ignore[index]
            return None
        return names, shapes  # type: ignore[return-value]
    return None


def attention_entry(rec: Any, path: str, module: nn.Module) -> bool:
    """Add an ``attention`` entry for ``module`` if it is one; mark its projections done."""
    head_dim = getattr(module, "head_dim", None)
    if not path or not isinstance(head_dim, int):
        return False
    found = _projections(module)
    if found is None:
        rec.notes.append(f"{path}: has head_dim but not q/k/v/o projections paramcalc knows; its "
                         "projections are plain linear layers and its logit scale is not derived")
        return False
    names, shapes = found
    fused = len(names) == 2
    d_model = shapes[0][1]
    n_heads = heads_of(module) if fused else shapes[0][0] // head_dim
    if n_heads is None or d_model != shapes[-1][0] or shapes[-1][1] != n_heads * head_dim:
        return False
    q = f"{path}.{names[0]}"

    def read_heads(m: nn.Module) -> int:
        a = m.get_submodule(path)
        return heads_of(a) if fused else _linear_out_in(a.get_submodule(names[0]))[0] // a.head_dim

    def read_kv(m: nn.Module) -> int:
        a = m.get_submodule(path)
        if fused:
            return (_linear_out_in(a.get_submodule(names[0]))[0] // a.head_dim - heads_of(a)) // 2
        return _linear_out_in(a.get_submodule(names[1]))[0] // a.head_dim

    entry: dict[str, Any] = {
        "kind": "attention", "name": path,
        "d_model": rec.dim(lambda m: _linear_out_in(m.get_submodule(q))[1], f"{q}.weight"),
        "n_heads": rec.dim(read_heads, f"{path} (heads)"),
        "d_head": rec.dim(lambda m: int(m.get_submodule(path).head_dim), f"{path}.head_dim"),
    }
    n_kv = rec.dim(read_kv, f"{path} (key/value heads)")
    if n_kv != entry["n_heads"]:
        entry["n_kv_heads"] = n_kv
    if fused:
        entry["fused"] = True
    if getattr(module.get_submodule(names[0]), "bias", None) is not None:
        entry["bias"] = True
    if shapes[0][2]:
        entry["layout"] = "in_out"
    parts = ("qkv", "o") if fused else ("q", "k", "v", "o")
    entry["names"] = dict(zip(parts, names))
    rec.entries.append(entry)
    rec.done.update(f"{path}.{n}" for n in names)
    return True
