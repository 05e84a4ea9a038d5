"""The torch modules that spec layers are built from (besides ``nn.Linear`` and ``nn.Embedding``).

Each layer kind (:mod:`paramcalc.kinds`) builds its module from these; :mod:`paramcalc.models`
assembles them into a model. :class:`Attention` takes its logit scale as the attribute ``scale``
(set from the derivation's ``d.evaluate_constants(widths)["<layer>.scale"]``) and records its
pre-softmax logits when ``record_logits`` is true. This module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "Attention", "InOutLinear", "LayerNorm", "Mlp", "OneHotLinear", "PackedAttention",
           "RMSNorm"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "identity": lambda x: x,
}
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


class PackedAttention(nn.MultiheadAttention):
    """Causal self-attention as torch's ``nn.MultiheadAttention`` holds it (a spec's ``attention``
    with ``packed: true``): ``in_proj_weight`` and ``in_proj_bias`` are its own tensors, ``out_proj``
    is the spec's linear layer, attached as a child; ``forward(x)`` takes ``(batch, seq, d_model)``.
    Its logits are torch's, ``q . k / sqrt(head_dim)``, until the emitted ``apply_multipliers``
    gives it the derived scale, as it does for any ``nn.MultiheadAttention``."""

    def __init__(self, d_model: int, n_heads: int, bias: bool, **factory: object) -> None:
        super().__init__(d_model, n_heads, bias=bias, batch_first=True, **factory)  # type: ignore[arg-type]
        del self.out_proj  # the spec's layer takes its place

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        return super().forward(x, x, x, attn_mask=mask, need_weights=False)[0]


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

    def __init__(self, n_heads: int, d_head: int, names: Mapping[str, str], fused: bool,
                 n_kv_heads: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
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

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        x = x.view(b, t, heads, self.d_head).transpose(1, 2)
        # Grouped-query attention: each key/value head serves n_heads / n_kv_heads query heads.
        return x if heads == self.n_heads else x.repeat_interleave(self.n_heads // heads, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        if self.fused:
            kv = self.n_kv_heads * self.d_head
            q, k, v = self._proj("qkv")(x).split([self.n_heads * self.d_head, kv, kv], dim=-1)
        else:
            q, k, v = self._proj("q")(x), self._proj("k")(x), self._proj("v")(x)
        q = self._heads(q, self.n_heads)
        k, v = self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)
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
        kv = f", n_kv_heads={self.n_kv_heads}" if self.n_kv_heads != self.n_heads else ""
        return f"n_heads={self.n_heads}{kv}, d_head={self.d_head}, scale={self.scale:.6g}"


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


class InOutLinear(nn.Module):
    """A linear layer that stores its weight ``(fan_in, fan_out)`` (a spec's ``layout: in_out``), as
    Hugging Face's ``Conv1D`` does: ``y = x @ weight + bias``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **factory: object) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features, **factory))  # type: ignore[arg-type]
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None  # type: ignore[arg-type]
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):  # token ids: rows of the weight
            out = self.weight[x]
        else:
            out = x @ self.weight
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout=in_out"
