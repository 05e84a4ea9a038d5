"""Factories named on the command line by the tests (``tests.model_factories:name``): a small model
that works, and the bad inputs a user can give."""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = {"mlp": {"d": {"base": 32}, "n_in": 8, "n_out": 4},
          "fails_wide": {"d": {"base": 16}, "n_in": 64, "n_out": 10}}


def mlp(w: dict[str, int]) -> nn.Module:
    d = w["d"]
    return nn.Sequential(nn.Linear(w["n_in"], d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(),
                         nn.Linear(d, w["n_out"]))


class FailsWide(nn.Sequential):
    """An MLP whose forward raises at width 64 and wider, as a run out of memory would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self[0].out_features >= 64:
            raise RuntimeError("CUDA out of memory (pretended)")
        return super().forward(x)


def fails_wide(w: dict[str, int]) -> nn.Module:
    return FailsWide(nn.Linear(w["n_in"], w["d"]), nn.ReLU(), nn.Linear(w["d"], w["n_out"]))


def raises(w: dict[str, int]) -> nn.Module:
    raise RuntimeError("config file not found")


def not_a_module(w: dict[str, int]) -> int:
    return 3


def not_monomial(w: dict[str, int]) -> nn.Module:
    """A hidden layer of width d^2 + 1: no product of powers of d."""
    d = w["d"]
    return nn.Sequential(nn.Linear(w["n_in"], d * d + 1), nn.Linear(d * d + 1, w["n_out"]))


class Bilinear(nn.Module):
    """A raw square matrix: paramcalc cannot tell its fan-in from its fan-out."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def unknown_kind(w: dict[str, int]) -> nn.Module:
    return nn.Sequential(nn.Linear(w["n_in"], w["d"]), Bilinear(w["d"]), nn.Linear(w["d"], w["n_out"]))


def adamw(model: nn.Module, widths: dict[str, int]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3)


def optim_raises(model: nn.Module, widths: dict[str, int]) -> torch.optim.Optimizer:
    raise ValueError("no such optimizer")


def vit_images(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A --data hook for examples.hf_models:vit: 16x16 RGB images and class ids."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=g), torch.randint(10, (batch,), generator=g)


def bad_batch(batch: int, seed: int) -> torch.Tensor:
    return torch.zeros(batch, 3)


class WithMultiheadAttention(nn.Module):
    """Token embedding, one causal nn.MultiheadAttention on a residual stream, a linear readout."""

    def __init__(self, d: int, heads: int = 4, **kwargs: object) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.att = nn.MultiheadAttention(d, heads, batch_first=True, **kwargs)
        self.out = nn.Linear(d, 50)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx)
        mask = torch.ones(idx.shape[1], idx.shape[1], dtype=torch.bool, device=idx.device).triu(1)
        return self.out(h + self.att(h, h, h, attn_mask=mask, need_weights=False)[0])


def multihead(w: dict[str, int]) -> nn.Module:
    return WithMultiheadAttention(w["d"])


def multihead_kdim(w: dict[str, int]) -> nn.Module:
    """Keys of their own width: q, k and v are not one packed in_proj_weight."""
    return WithMultiheadAttention(w["d"], kdim=8, vdim=8)
