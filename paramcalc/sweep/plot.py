"""The sweep's figure, as mup's README draws it: loss against log2 lr, one curve per width (darker
is wider), each width's fitted optimum marked, one panel per parametrization."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from paramcalc.sweep.analysis import analyse, loss_table

__all__ = ["plot_sweep"]


def plot_sweep(records: Iterable[Mapping[str, Any]], path: Path | str) -> None:
    """Draw ``records`` to ``path`` (any format matplotlib writes), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paramcalc.files import write_atomically

    records = list(records)
    table, optima = loss_table(records), analyse(records)
    params = sorted({p for p, _ in table})
    widths = sorted({w for _, w in table})
    fig, axes = plt.subplots(1, len(params), figsize=(5 * len(params), 4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, param in zip(axes[0], params):
        for i, width in enumerate(widths):
            by_lr = table.get((param, width))
            if not by_lr:
                continue
            color = cmap(0.9 - 0.8 * i / max(len(widths) - 1, 1))
            xs = [x for x, y in by_lr.items() if math.isfinite(y)]
            ax.plot(xs, [by_lr[x] for x in xs], "o-", color=color, ms=3, label=f"width {width}")
            best = next(o for o in optima if o.parametrization == param and o.width == width)
            if math.isfinite(best.log2_lr):
                ax.axvline(best.log2_lr, color=color, ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("log2 learning rate")
        ax.set_title(param)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss after the last step")
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    write_atomically(Path(path), lambda tmp: fig.savefig(tmp, format=suffix, dpi=120), option="--plot")
    plt.close(fig)
