"""Reproduce the paper's Figure 1: gradient updates have low stable rank and stay aligned with their
inputs even at large batch size.

Setup (paper App. A): MLPs of depth 3, hidden widths ``n1 = n2 = 300``, 10 outputs, ReLU and tanh,
randomly initialised (standard parametrization, Eq. 21). For each batch size ``B`` one gradient step
``dW_2`` of the second layer is computed on a random batch and we report

- its stable rank ``||dW||_F^2 / ||dW||_*^2`` (left panel), against its largest possible value 300;
- its alignment with the layer's inputs, Eq. 25: ``E_x ||dW h'_1(x)|| / (||dW||_* ||h'_1(x)||)``
  (right panel),

as mean and standard deviation over 10 trials (new init and new batch each). The paper uses CIFAR-10
(input 3072); without network access this script uses scikit-learn's digits (input 64, 10 classes,
shipped with the package) by default, or synthetic Gaussian inputs of dimension 3072 with
``--data synthetic`` (random labels: structure-free data, an upper bound on the stable rank).

Everything comes from the library: the spec and its derivation, the model (``paramcalc.models``),
the parametrization through the emitted PyTorch code, the data (``paramcalc.verify.data``), and the
spectral norm (``paramcalc.verify.linalg``).

    python examples/figure1.py [--data digits|synthetic] [--trials 10] [--out figure1.png]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import paramcalc
from paramcalc.verify.data import make_batch
from paramcalc.verify.linalg import spectral_norm, stable_rank
from paramcalc.verify.model import apply_parametrization, build
from paramcalc.verify.plot import _save

WIDTH = 300
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def spec(n0: int, activation: str) -> dict:
    return {
        "name": f"figure1-{activation}",
        "activation": activation,
        "widths": {"n0": n0, "d": {"base": WIDTH}, "n_out": 10},
        "layers": [
            {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
            {"name": "fc2", "fan_in": "d", "fan_out": "d"},
            {"name": "head", "fan_in": "d", "fan_out": "n_out"},
        ],
    }


def one_update(
    derivation: paramcalc.Derivation, n0: int, batch: int, trial: int, data: str
) -> tuple[float, float]:
    """Stable rank and Eq. 25 alignment of one gradient step of fc2 (any learning rate: both are
    scale-free)."""
    widths = {"n0": n0, "d": WIDTH, "n_out": 10}
    torch.manual_seed(1000 + trial)
    model = build(derivation, widths, factory=None, device=torch.device("cpu"))
    apply_parametrization(derivation, model, widths, lr=1.0)
    data_batch = make_batch(data=data, loss="ce", batch=batch, n_in=n0, n_out=10, sparse=False,
                            seed=7 * trial + batch)
    inputs: dict[str, torch.Tensor] = {}
    hook = model.get_submodule("fc2").register_forward_hook(
        lambda module, args, output: inputs.__setitem__("h", args[0].detach()))
    loss = data_batch.loss_value(model(data_batch.x))
    loss.backward()
    hook.remove()
    dw = -model.get_parameter("fc2.weight").grad
    top = spectral_norm(dw, tol=1e-6).value
    rank = stable_rank(float(dw.norm()), top)
    h = inputs["h"]
    norms = h.norm(dim=1)
    ok = norms > 0
    alignment = float(((h[ok] @ dw.T).norm(dim=1) / (top * norms[ok])).mean())
    return rank, alignment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", default="figure1.png")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    n0 = 64 if args.data == "digits" else 3072
    start = time.perf_counter()
    results: dict[str, dict[str, list[list[float]]]] = {}
    for activation in ("relu", "tanh"):
        d = paramcalc.derive(spec(n0, activation), "sp", "sgd")
        ranks, aligns = [], []
        for batch in BATCHES:
            runs = [one_update(d, n0, batch, trial, args.data) for trial in range(args.trials)]
            ranks.append([r for r, _ in runs])
            aligns.append([a for _, a in runs])
        results[activation] = {"stable_rank": ranks, "alignment": aligns}
    seconds = time.perf_counter() - start

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for activation, color in (("relu", "C0"), ("tanh", "C1")):
        for ax, key in ((left, "stable_rank"), (right, "alignment")):
            rows = results[activation][key]
            mean = [sum(r) / len(r) for r in rows]
            std = [math.sqrt(sum((v - m) ** 2 for v in r) / len(r)) for r, m in zip(rows, mean)]
            ax.plot(BATCHES, mean, "o-", color=color, label=activation)
            ax.fill_between(BATCHES, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.axvline(WIDTH, color="gray", linestyle="--", linewidth=1)
        ax.legend()
    left.set_yscale("log")
    left.axhline(WIDTH, color="gray", linestyle="--", linewidth=1)
    left.set_ylabel("stable rank of dW_2")
    right.set_ylabel("alignment (Eq. 25)")
    right.set_ylim(0, 1.05)
    fig.suptitle(f"Figure 1: gradient updates of an MLP of width {WIDTH} ({args.data} data, "
                 f"{args.trials} trials)")
    _save(fig, Path(args.out))
    for activation in ("relu", "tanh"):
        r = results[activation]
        ranks = [sum(x) / len(x) for x in r["stable_rank"]]
        aligns = [sum(x) / len(x) for x in r["alignment"]]
        print(f"{activation}: stable rank {ranks[0]:.2f} (B=1) .. {max(ranks):.2f} (max) .. {ranks[-1]:.2f} "
              f"(B={BATCHES[-1]}); alignment {aligns[0]:.2f} (B=1) .. {min(aligns):.2f} (min)")
    print(f"wrote {args.out} in {seconds:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"batches": BATCHES, "data": args.data, **results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
