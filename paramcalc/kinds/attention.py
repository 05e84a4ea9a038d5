"""``attention``: multi-head self-attention, a residual branch of a transformer.

Its projections are linear layers of their own (``<block>.q``, ``.k``, ``.v`` or one fused
``.qkv``, and ``.o``), so every rule treats them as any other weight. What is particular to
attention is the logit scale on ``q . k``, a derived constant (``"<layer>.scale"``) that the rule
gives (:meth:`Rule.attention_scale`).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sympy
from pydantic import StrictBool

from paramcalc.kinds.base import LayerAttrs, LayerKind
from paramcalc.kinds.fields import Dim, Name, SpecEntry

__all__ = ["KIND", "PROJECTION_NAMES", "Attention", "AttentionAttrs", "AttentionLayer", "AttentionNames",
           "attention_as_linears"]

#: Names of attention projections: (q, k, v, o) or (fused qkv, o). Child modules of one parent under
#: one of these sets are attention (paramcalc.infer) or, as plain linear layers, look like it.
PROJECTION_NAMES: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),
    ("q", "k", "v", "o"),
    ("query", "key", "value", "out_proj"),
    ("c_attn", "c_proj"),
    ("qkv", "proj"),
    ("qkv", "o"),
)


def attention_as_linears(spec: Any) -> list[str]:
    """Parents of linear layers named like the q, k and v projections of attention (``blk.q_proj``,
    ``blk.k_proj``, ``blk.v_proj``, ...): attention written as plain linears, whose logit scale no
    derivation gives (muP's ``1/d_head`` on ``q . k``, TP5 Sec. J, would be lost without a word)."""
    attention = {layer.name for layer in spec.layers if layer.kind == "attention"}
    linears = {layer.name for layer in spec.layers
               if layer.kind == "linear" and layer.attrs.get("block") not in attention}
    parents = []
    for name in sorted(linears):
        parent, _, leaf = name.rpartition(".")
        for names in PROJECTION_NAMES:
            if len(names) == 4 and leaf == names[0] and all(f"{parent}.{n}" in linears
                                                             for n in names[1:3]):
                parents.append(parent)
    return parents


class AttentionNames(SpecEntry):
    """Submodule names of the projections inside an attention block."""

    q: Name = "q"
    k: Name = "k"
    v: Name = "v"
    qkv: Name = "qkv"
    o: Name = "o"


class AttentionLayer(SpecEntry):
    """Multi-head self-attention: q, k, v projections ``d_model -> n_heads*d_head`` and an output
    projection back (``fused: true``: one ``qkv`` projection of width ``3*n_heads*d_head``).

    ``n_kv_heads`` (default ``n_heads``) makes it grouped-query attention (Ainslie et al. 2023):
    k and v project to ``n_kv_heads*d_head``, each of their heads shared by ``n_heads/n_kv_heads``
    query heads; fused, ``qkv`` is ``(n_heads + 2*n_kv_heads)*d_head`` wide. ``layout: in_out``
    stores every projection ``(fan_in, fan_out)`` (Hugging Face ``Conv1D``).

    ``packed: true`` is torch's ``nn.MultiheadAttention``: one fused q, k, v projection whose
    tensors the attention module holds itself (``<name>.in_proj_weight``, ``<name>.in_proj_bias``)
    and an output projection ``<name>.out_proj``; ``fused`` is implied, ``names`` are those, and
    there is no grouped-query attention. torch's module takes no logit scale: the emitted code's
    ``apply_multipliers`` gives it a forward that applies the derived scale (and the multipliers of
    its ``in_proj`` and ``out_proj``, whose module torch's forward does not call).

    The derivation also gives the attention-logit scale to pass to attention.
    """

    kind: Literal["attention"]
    name: Name
    d_model: Dim
    n_heads: Dim
    d_head: Dim
    n_kv_heads: Dim | None = None
    bias: StrictBool = False
    fused: StrictBool = False
    packed: StrictBool = False
    layout: Literal["out_in", "in_out"] = "out_in"
    names: AttentionNames = AttentionNames()


@dataclass(frozen=True)
class AttentionAttrs(LayerAttrs):
    """An attention block's attributes; ``projections`` maps each part (q, k, v or qkv, o) to its
    linear layer's name."""

    d_model: sympy.Expr
    n_heads: sympy.Expr
    d_head: sympy.Expr
    fused: bool
    projections: Mapping[str, str]
    n_kv_heads: sympy.Expr | None = None
    packed: bool = False
    bias: bool = False


class Attention(LayerKind):
    """Its layers' attributes: :class:`AttentionAttrs`."""

    name = "attention"
    schema = AttentionLayer
    residual_branch = True
    mixes_tokens = True

    def expand(self, builder: Any, name: str, entry: AttentionLayer, path: str) -> None:
        d_model = builder.dim(entry.d_model, f"{path}.d_model")
        n_heads = builder.dim(entry.n_heads, f"{path}.n_heads")
        d_head = builder.dim(entry.d_head, f"{path}.d_head")
        kv_raw = entry.n_heads if entry.n_kv_heads is None else entry.n_kv_heads
        n_kv = builder.dim(kv_raw, f"{path}.n_kv_heads")
        if d_model is None or n_heads is None or d_head is None or n_kv is None:
            return
        if entry.packed:
            entry = _packed(builder, entry, path, sympy.simplify(n_heads * d_head - d_model) == 0)
            if entry is None:
                return
        # Sub-expressions are written back as text for the projections' own parsing (cached).
        width = f"({entry.n_heads})*({entry.d_head})"
        kv = f"({kv_raw})*({entry.d_head})"
        if entry.fused:
            fused = (f"3*{width}" if entry.n_kv_heads is None
                     else f"(({entry.n_heads}) + 2*({kv_raw}))*({entry.d_head})")
            parts = {"qkv": (entry.d_model, fused)}
        else:
            parts = {"q": (entry.d_model, width), "k": (entry.d_model, kv), "v": (entry.d_model, kv)}
        parts["o"] = (width, entry.d_model)
        subs = builder.projections(name, parts, entry.names, entry.bias, path, entry.layout,
                                   packed=("qkv",) if entry.packed else ())
        attrs = AttentionAttrs(d_model, n_heads, d_head, entry.fused, subs,
                               None if entry.n_kv_heads is None else n_kv, entry.packed, entry.bias)
        builder.add_layer(name, self.name, path, {}, attrs)

    def width_in(self, layer: Any) -> Any:
        return layer.attrs["d_model"]

    def torch_module(self, layer: Any, dims: Any, factory: Any, activation: str) -> Any:
        from paramcalc.modules import Attention as AttentionModule
        from paramcalc.modules import PackedAttention

        if layer.attrs.get("packed"):
            return PackedAttention(dims(layer.attrs["d_model"], layer.path),
                                   dims(layer.attrs["n_heads"], layer.path), bias=bool(layer.attrs["bias"]),
                                   **factory)
        names = {k: v.rsplit(".", 1)[1] for k, v in layer.attrs["projections"].items()}
        n_kv = layer.attrs.get("n_kv_heads")
        return AttentionModule(dims(layer.attrs["n_heads"], layer.path),
                               dims(layer.attrs["d_head"], layer.path), names, bool(layer.attrs["fused"]),
                               None if n_kv is None else dims(n_kv, layer.path))

    def constants(self, layer: Any, rule: Any, base: Any) -> dict[str, Any]:
        d_head = layer.attrs["d_head"]
        return {f"{layer.name}.scale": rule.attention_scale(d_head, d_head.xreplace(base))}


#: The names of torch's ``nn.MultiheadAttention``'s projections.
PACKED_NAMES = AttentionNames(qkv="in_proj", o="out_proj")


def _packed(builder: Any, entry: AttentionLayer, path: str, heads_fill: bool) -> AttentionLayer | None:
    """``entry`` (``packed: true``) as a fused attention named as ``nn.MultiheadAttention``; None
    (a problem recorded) where torch's module cannot be that attention (``heads_fill``: whether
    ``n_heads * d_head`` is ``d_model``)."""
    wrong = []
    if not heads_fill:
        wrong.append(("d_head", "its head_dim is d_model/n_heads"))
    if entry.n_kv_heads is not None and entry.n_kv_heads != entry.n_heads:
        wrong.append(("n_kv_heads", "nn.MultiheadAttention has no grouped-query attention"))
    if entry.layout != "out_in":
        wrong.append(("layout", "nn.MultiheadAttention stores in_proj_weight (out, in)"))
    if entry.names not in (AttentionNames(), PACKED_NAMES):
        wrong.append(("names", "a packed attention's projections are in_proj and out_proj"))
    for field, why in wrong:
        builder.problem(f"{path}.{field}", f"packed: true is torch's nn.MultiheadAttention: {why}")
    if wrong:
        return None
    return entry.model_copy(update={"fused": True, "names": PACKED_NAMES})


KIND = Attention()


def warn_attention_as_linears(spec: Any) -> None:
    """Warn when linear layers look like attention's projections: no logit scale is derived for them
    (called by :func:`paramcalc.derive`)."""
    parents = attention_as_linears(spec)
    if parents:
        import warnings

        where = ", ".join(parents[:3]) + (" ..." if len(parents) > 3 else "")
        warnings.warn(
            f"{spec.source or spec.name}: {where}: q, k, v projections written as plain linear layers, so "
            "no attention-logit scale is derived or set for them (muP's is 1/d_head, not 1/sqrt(d_head)); "
            "declare each as `kind: attention` "
            "(d_model, n_heads, d_head, names: {q: ..., k: ..., v: ..., o: ...})",
            UserWarning, stacklevel=3)
