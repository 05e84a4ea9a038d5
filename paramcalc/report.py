"""Readable terminal output (rich) for derivations."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from paramcalc.emit.printing import exponent_text, text
from paramcalc.engine import QUANTITIES, Derivation

__all__ = ["print_derivation"]


def print_derivation(
    d: Derivation, widths: Mapping[str, int] | None = None, output: Path | None = None
) -> None:
    """A table of every tensor's expressions, Theta-exponents and values.

    Tensors of a repeated block that are equal in every column share one row
    (``blocks.*.attn.q.weight x12``), as in the Markdown, LaTeX and HTML tables.
    """
    import io

    from rich.console import Console
    from rich.table import Table

    from paramcalc.emit.tables import collapse_blocks

    values_at = d.resolve_widths(widths)
    values = d.evaluate(values_at)
    rows = []
    for name, p in d.items():
        exps = p.exponents
        rows.append((name, (
            p.tensor.role,
            *(text(getattr(p, q)) for q in QUANTITIES),
            ", ".join(exponent_text(exps[q]) for q in QUANTITIES),
            ", ".join(f"{values[name][q]:.4g}" for q in QUANTITIES),
        )))
    collapsed, merged = collapse_blocks(rows, lambda pattern, count: f"{pattern} x{count}")
    at = ", ".join(f"{k}={v}" for k, v in values_at.items())
    blocks = "\n* stands for every block index of a repeated block." if merged else ""
    if any(p.tensor.init == "ones" for p in d.values()):  # W ~ N(0, 0) would read as zero gains
        blocks += "\ninit_std 0 marks a constant init: biases start at 0, norm gains at 1."
    table = Table(
        title=f"{d.spec.name}: {d.parametrization}, {d.optimizer.title} ({d.form} form)",
        caption="effective weight = multiplier * W, W ~ N(0, init_std^2), step = lr * eta.\n"
        f"n^k: Theta-exponents in width (init_std, lr, multiplier); values at {at}.{blocks}",
    )
    table.add_column("tensor", style="bold", no_wrap=True)
    table.add_column("role")
    for q in QUANTITIES:
        table.add_column(q, overflow="fold")
    table.add_column("n^k", no_wrap=True)
    table.add_column("values", no_wrap=True)
    for row in collapsed:
        table.add_row(*row)
    if output is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        console.print(table)
    else:
        from paramcalc.files import write_atomically

        console = Console(record=True, width=160, file=io.StringIO())
        console.print(table)
        text_out = console.export_text()
        write_atomically(output, lambda tmp: Path(tmp).write_text(text_out, encoding="utf-8"))
