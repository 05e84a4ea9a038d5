"""``--emit markdown``: one derivation as a Markdown table."""

from __future__ import annotations

from collections.abc import Mapping

from paramcalc.derive import Derivation
from paramcalc.emit.printing import exponent_text, text
from paramcalc.emit.templating import render

__all__ = ["emit_markdown", "md_cell"]


def md_cell(value: str) -> str:
    """Escape a string for a Markdown table cell."""
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def emit_markdown(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    values_at = d.resolve_widths(widths)
    values = d.evaluate(values_at)
    rows = []
    for name, p in d.items():
        e = p.exponents
        v = values[name]
        rows.append(
            {
                "name": md_cell(name),
                "role": p.tensor.role,
                "shape": md_cell(" x ".join(text(s) for s in p.tensor.shape)),
                "init_std": md_cell(text(p.init_std)),
                "lr": md_cell(text(p.lr)),
                "multiplier": md_cell(text(p.multiplier)),
                "exponents": ", ".join(exponent_text(e[q]) for q in ("init_std", "lr", "multiplier")),
                "numbers": ", ".join(_fmt(v[q]) for q in ("init_std", "lr", "multiplier")),
            }
        )
    return render(
        "markdown/derivation.md.j2",
        spec=md_cell(d.spec.name),
        parametrization=d.parametrization,
        optimizer=d.optimizer.title,
        form=d.form,
        widths=", ".join(f"{k} = {v}" for k, v in values_at.items()),
        rows=rows,
    )
