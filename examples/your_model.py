"""Your model as it is: paramcalc on torch models no one wrote a spec for (the README's walk-through).

Three models: Hugging Face Llama (grouped-query attention, RMSNorm, SwiGLU), Hugging Face ViT
(a convolution as patch embedding, a raw class token and position table), and a small CNN written
here in plain torch, as a user would. For each, at 4x its base width::

    spec = paramcalc.infer_spec(factory, WIDTHS[...])      # read off the model, on the meta device
    d = paramcalc.derive(spec, "mup", "adam")
    widths = paramcalc.widths_at(d, d_model=256)           # every width from one
    model = paramcalc.torch.apply(factory(widths), d, widths)
    opt = torch.optim.AdamW(paramcalc.torch.param_groups(model, d, 3e-4, widths, weight_decay=0.1))
    paramcalc.audit(model, opt, d, widths).ok               # True; a plain AdamW fails it

Run it with ``python examples/your_model.py`` (Llama and ViT need ``transformers``; without it
only the CNN runs). The same from the command line::

    paramcalc infer examples.your_model:cnn -o cnn.yaml
    paramcalc audit --model examples.your_model:cnn --optim examples.your_model:plain_adamw \\
        --param mup --optimizer adam --widths width=64          # exit 1: names every wrong tensor
    paramcalc audit --model examples.your_model:cnn --optim examples.your_model:paramcalc_adamw \\
        --param mup --optimizer adam --widths width=64          # exit 0
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

import paramcalc
import paramcalc.torch

WIDTHS = {
    "cnn": {"width": {"base": 16}, "n_classes": 10},
    "llama": {"d_model": {"base": 64}, "n_heads": {"base": 4}, "n_kv_heads": {"base": 2}, "vocab": 100,
              "n_layers": 2},
    "vit": {"d_model": {"base": 64}, "n_heads": {"base": 2}, "image": 16, "patch": 4, "n_classes": 10,
            "n_layers": 2},
}
LR, WEIGHT_DECAY = 3e-4, 0.1


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with batch norm, global average pooling and a linear head."""

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.norm2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def cnn(w: dict[str, int]) -> nn.Module:
    return SmallCNN(w["width"], w["n_classes"])


def llama(w: dict[str, int]) -> nn.Module:
    from examples.hf_models import llama as build

    return build(w)


def vit(w: dict[str, int]) -> nn.Module:
    from examples.hf_models import vit as build

    return build(w)


def derivation(name: str, param: str = "mup") -> paramcalc.Derivation:
    """The derivation for Adam of the model ``name`` (a factory of this module), from its own spec."""
    return paramcalc.derive(paramcalc.infer_spec(globals()[name], WIDTHS[name], name=name), param, "adam")


def plain_adamw(model: nn.Module, widths: dict[str, int]) -> torch.optim.Optimizer:
    """The usual setup: one lr and one weight decay for every tensor, torch's default init."""
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def paramcalc_adamw(model: nn.Module, widths: dict[str, int]) -> torch.optim.Optimizer:
    """The CNN under muP: paramcalc's init and multipliers, one param group per lr factor."""
    d = derivation("cnn")
    paramcalc.torch.apply(model, d, widths)
    return torch.optim.AdamW(paramcalc.torch.param_groups(model, d, LR, widths, weight_decay=WEIGHT_DECAY))


def walk_through(name: str) -> dict[str, object]:
    """The factory route on one model at 4x base: what the audit says of a plain AdamW and of
    paramcalc's param groups, and the loss over three steps with the latter."""
    from paramcalc.infer.inputs import example_input, output_tensor

    d = derivation(name)
    lead = next(w for w in d.spec.widths.values() if w.scaling)
    widths = paramcalc.widths_at(d, **{lead.name: 4 * lead.value})
    factory = globals()[name]
    plain = factory(widths)
    plain_report = paramcalc.audit(plain, plain_adamw(plain, widths), d, widths)
    model = paramcalc.torch.apply(factory(widths), d, widths)
    opt = torch.optim.AdamW(paramcalc.torch.param_groups(model, d, LR, widths, weight_decay=WEIGHT_DECAY))
    report = paramcalc.audit(model, opt, d, widths)
    # inputs the model reads: token ids, or images of the size it was configured for
    x = example_input(d.spec, widths, model, batch=4, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(3):
        out = output_tensor(model(x))
        loss = out.float().logsumexp(-1).mean() - out[..., 0].float().mean()  # cross-entropy, class 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"widths": widths, "tensors": len(d), "plain_failures": len(plain_report.failures),
            "audit_ok": report.ok, "losses": losses}


def main() -> dict[str, dict[str, object]]:
    names = ["cnn"] + (["llama", "vit"] if importlib.util.find_spec("transformers") else [])
    results = {}
    for name in names:
        r = results[name] = walk_through(name)
        print(f"{name} at {r['widths']}: {r['tensors']} tensors; plain AdamW fails "
              f"{r['plain_failures']} audit checks, paramcalc's param groups "
              f"{'pass' if r['audit_ok'] else 'FAIL'}; losses {[round(v, 4) for v in r['losses']]}")
    return results


if __name__ == "__main__":
    main()
