"""The paper's Figure 2 experiment with App. A's constants written out, independent of paramcalc.

App. A, "Experimental details for Figure 2": MLPs of depth 3, widths ``n0, d, d, 1``, ReLU, no biases,
200 examples with ``+-1`` targets, full-batch training for 10^4 steps, global learning rate
``eta = 0.1``, and two schemes:

    muP:  sigma_1 = sqrt(2/n0), sigma_2 = sqrt(2/d), sigma_3 = sqrt(2)/d
          eta_1 = eta d/n0,     eta_2 = eta,         eta_3 = eta/d
    NTP:  sigma_l = sqrt(2/n_{l-1}),  eta_l = eta / n_{l-1}

This module types those constants in and trains with plain torch (its own forward, loss and SGD
step), so that the figure's App. A curves do not depend on paramcalc's engine or verifier; the
figure script trains paramcalc's own rules next to them. The loss is the mean squared error over
the batch. The four panels are measured between the initial and the final network:

A. ``E_x ||h_2(x) - h_2^0(x)|| / ||h_2^0(x)||`` (Eq. 23, ``h_2`` the second preactivation);
B. ``||W_2 - W_2^0||_* / ||W_2^0||_*``;
C. ``E_x ||W_3 h'_2(x)|| / (||W_3||_* ||h'_2(x)||)`` (Eq. 24, ``h'_2`` after the ReLU);
D. ``||W_2 - W_2^0||_F / ||W_2^0||_F``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCHEMES", "constants", "train"]

SCHEMES = ("mup", "ntp")


def constants(scheme: str, n0: int, d: int, eta: float = 0.1) -> list[tuple[float, float]]:
    """``(sigma_l, eta_l)`` for the three layers, exactly as App. A writes them."""
    if scheme == "mup":
        return [(math.sqrt(2 / n0), eta * d / n0), (math.sqrt(2 / d), eta), (math.sqrt(2) / d, eta / d)]
    if scheme == "ntp":
        return [(math.sqrt(2 / fan_in), eta / fan_in) for fan_in in (n0, d, d)]
    raise ValueError(f"scheme: one of {', '.join(SCHEMES)}, got {scheme!r}")


def train(x: torch.Tensor, y: torch.Tensor, d: int, scheme: str, steps: int, seed: int,
          eta: float = 0.1) -> dict[str, float]:
    """Train one network full-batch on ``(x, y)`` (``y`` of shape ``(B, 1)``); the four panels'
    values and the final loss (``inf`` where training diverged)."""
    n0 = x.shape[1]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    scales = constants(scheme, n0, d, eta)
    shapes = [(d, n0), (d, d), (1, d)]
    weights = [(torch.randn(shape, generator=generator) * sigma).to(x)
               for shape, (sigma, _) in zip(shapes, scales)]
    initial = [w.clone() for w in weights]
    for w in weights:
        w.requires_grad_(True)
    loss = torch.tensor(math.inf)
    for _ in range(steps):
        loss = ((_forward(x, weights)[2] - y) ** 2).mean()
        grads = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for w, g, (_, lr) in zip(weights, grads, scales):
                w.sub_(lr * g)
    with torch.no_grad():
        final_loss = float(((_forward(x, weights)[2] - y) ** 2).mean())
        if not math.isfinite(final_loss):
            return {"A": math.nan, "B": math.nan, "C": math.nan, "D": math.nan, "loss": math.inf}
        return {**_panels(x, initial, [w.detach() for w in weights]), "loss": final_loss}


def _forward(x: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h_2, h'_2, f)``: the second preactivation, its ReLU, and the output."""
    h2 = torch.relu(x @ weights[0].T) @ weights[1].T
    a2 = torch.relu(h2)
    return h2, a2, a2 @ weights[2].T


def _panels(x: torch.Tensor, initial: list[torch.Tensor], final: list[torch.Tensor]) -> dict[str, float]:
    h2_0 = _forward(x, initial)[0]
    h2, a2, _ = _forward(x, final)
    dw2 = final[1] - initial[1]
    spectral = lambda m: torch.linalg.matrix_norm(m.double(), ord=2)  # noqa: E731
    w3 = final[2].double()
    alignment = (a2.double() @ w3.T).norm(dim=1) / (spectral(w3) * a2.double().norm(dim=1))
    return {
        "A": float(((h2 - h2_0).norm(dim=1) / h2_0.norm(dim=1)).mean()),
        "B": float(spectral(dw2) / spectral(initial[1])),
        "C": float(alignment[a2.norm(dim=1) > 0].mean()),
        "D": float(dw2.norm() / initial[1].norm()),
    }
