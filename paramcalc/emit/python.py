"""What the PyTorch and JAX emitters share: Python source over a dict of widths, and the safety rules.

Emitted code computes every value at run time from the derived expression, printed by
:func:`paramcalc.emit.printing.python_code` over a dict ``w`` of widths: ``1/math.sqrt(w['d'])``.
User text (the spec name, layer names, width names) reaches the code only through :func:`literal`
(``repr``: a one-line string literal whatever the text) or :func:`comment` (one line, no line
breaks), never as an identifier: a width named ``lambda`` or ``math`` cannot change what the code
means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sympy

from paramcalc.emit.printing import python_code, text
from paramcalc.engine import Derivation

__all__ = [
    "WidthCode",
    "comment",
    "constant_entries",
    "expression_comment",
    "header",
    "literal",
    "number",
    "numbers_at",
    "shape_at",
    "tensor_entry",
    "width_defaults",
]

_PLACEHOLDER = re.compile(r"\b_w(\d+)\b")


def literal(value: str) -> str:
    """A Python string literal for ``value``: ``repr`` escapes quotes, backslashes and line breaks."""
    return repr(str(value))


def comment(value: str) -> str:
    """``value`` made safe for the rest of a ``#`` comment line: no line breaks, no control characters."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def number(value: float) -> str:
    """A float as Python source that reads back to the same float."""
    return repr(float(value))


@dataclass(frozen=True)
class WidthCode:
    """Prints expressions in a spec's width symbols as Python over the dict ``w``: ``w['d']/256``.

    Each width symbol is swapped for a placeholder symbol (positive, like the widths) before
    printing and the placeholder for ``w[<literal name>]`` after, so width names appear in the
    code only as string literals.
    """

    placeholders: Mapping[sympy.Symbol, sympy.Symbol]
    names: tuple[str, ...]
    _memo: dict[sympy.Basic, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def for_derivation(cls, d: Derivation) -> WidthCode:
        widths = list(d.spec.widths.values())
        return cls(
            {w.symbol: sympy.Symbol(f"_w{i}", positive=True) for i, w in enumerate(widths)},
            tuple(w.name for w in widths),
        )

    def __call__(self, expr: sympy.Expr) -> str:
        expr = sympy.sympify(expr)
        found = self._memo.get(expr)
        if found is None:
            code = python_code(expr.xreplace(self.placeholders))
            found = _PLACEHOLDER.sub(lambda m: f"w[{literal(self.names[int(m.group(1))])}]", code)
            self._memo[expr] = found
        return found


def header(d: Derivation, target: str) -> dict[str, Any]:
    """What produced the code, for the header comment and the module constants."""
    from paramcalc import __version__

    return {
        "spec": literal(d.spec.name),
        "spec_comment": comment(repr(d.spec.name)),
        "parametrization": literal(d.parametrization),
        "parametrization_comment": comment(d.parametrization),
        "optimizer": literal(d.optimizer.name),
        "optimizer_comment": comment(d.optimizer.title + _adjust_note(d)),
        "weight_decay_policy": literal(d.weight_decay),
        "muon_adjust": literal(d.optimizer.adjust) if hasattr(d.optimizer, "adjust") else "None",
        "form": literal(d.form),
        "form_comment": comment(d.form),
        "version": literal(__version__),
        "version_comment": comment(__version__),
        "command": comment(_command(d, target)),
        "scaling": "{" + ", ".join(f"{literal(w.name)}: {w.value}" for w in d.spec.widths.values()
                                   if w.scaling and not w.depth) + "}",
        "depths": "{" + ", ".join(f"{literal(b.width)}: {b.count}" for b in d.spec.depth_blocks) + "}",
    }


def _adjust_note(d: Derivation) -> str:
    adjust = getattr(d.optimizer, "adjust", None)
    return f" (adjust_lr_fn={adjust}) with AdamW for the other tensors" if adjust else ""


def _command(d: Derivation, target: str) -> str:
    """The command that regenerates the code, or where it came from if no command does."""
    from paramcalc.engine.rules import get_rule

    forms = get_rule(d.parametrization).forms
    if d.form not in forms:
        return f"paramcalc.emit.emit(derivation, {target!r}) on a {d.form} derivation (Python API)"
    return (
        f"paramcalc derive SPEC --param {d.parametrization} --optimizer {d.optimizer.name}"
        + (f" --form {d.form}" if d.form != forms[0] else "")
        + (f" --muon-adjust {d.optimizer.adjust}" if getattr(d.optimizer, "adjust", "original") != "original"
           else "")
        + (f" --decay-policy {d.weight_decay}" if d.weight_decay != "independent" else "")
        + (f" --decay {','.join(d.decay)}" if tuple(d.decay) != ("weight",) else "")
        + f" --emit {target}"
    )


def numbers_at(d: Derivation, expr: sympy.Expr, widths: Mapping[str, int]) -> float:
    """``expr`` as a float at ``widths`` (every width of the spec given)."""
    from paramcalc.symbolic import numeric

    return numeric(sympy.sympify(expr), {w.symbol: float(widths[w.name]) for w in d.spec.widths.values()})


def shape_at(d: Derivation, shape: tuple[sympy.Expr, ...], widths: Mapping[str, int]) -> tuple[int, ...]:
    """A tensor shape at ``widths`` as integers."""
    at = {w.symbol: sympy.Integer(widths[w.name]) for w in d.spec.widths.values()}
    return tuple(int(s.xreplace(at)) for s in shape)


def width_defaults(d: Derivation, widths: Mapping[str, int]) -> list[dict[str, Any]]:
    """The ``WIDTHS`` dict's entries: each width's default value, and its base if it scales."""
    return [
        {
            "name": literal(w.name),
            "value": widths[w.name],
            "comment": f"  # scales with width; base {w.value}" if w.scaling else "",
        }
        for w in d.spec.widths.values()
    ]


def expression_comment(**exprs: sympy.Expr) -> str:
    """``init_std 1/sqrt(d), lr d/256``: the expressions of one tensor, for a trailing comment."""
    return comment(", ".join(f"{k} {text(v)}" for k, v in exprs.items()))


def tensor_entry(
    d: Derivation, name: str, shape: tuple[sympy.Expr, ...], values: Mapping[str, float],
    widths: Mapping[str, int], code: WidthCode, lr: sympy.Expr | None = None,
) -> dict[str, str]:
    """One tensor's strings for a template: its comment, its row of numbers at ``widths`` and the
    code of each quantity over ``w`` (``shape`` in the target's own layout; ``lr``: the factor where
    the target's optimizer reads that layout differently, :func:`paramcalc.engine.factors.lr_in_layout`)."""
    p = d[name]
    if lr is not None and lr != p.lr:
        p = replace(p, lr=lr)
        values = {**values, "lr": numbers_at(d, lr, widths)}
    factors = {"eps": p.eps, "weight_decay": p.weight_decay}
    shown = {k: v for k, v in factors.items() if v != 1 or k == "weight_decay"}
    return {
        "name": literal(name),
        "comment": comment(f"{name}: ")
        + expression_comment(init_std=p.init_std, lr=p.lr, multiplier=p.multiplier, **shown)
        + comment(f"; {p.optimizer}"),
        "table": "{"
        + ", ".join([
            f"'shape': {shape_at(d, shape, widths)!r}",
            f"'init_mean': {number(numbers_at(d, p.init_mean, widths))}",
            *(f"'{q}': {number(values[q])}" for q in ("init_std", "lr", "multiplier", "eps", "weight_decay")),
            f"'optimizer': {literal(p.optimizer)}",
        ])
        + "}",
        "shape": ", ".join(code(s) for s in shape),
        "init_mean": code(p.init_mean),
        "init_std": code(p.init_std),
        "lr": code(p.lr),
        "multiplier": code(p.multiplier),
        "eps": code(p.eps),
        "weight_decay": code(p.weight_decay),
        "optimizer": literal(p.optimizer),
    }


def constant_entries(
    d: Derivation, widths: Mapping[str, int], code: WidthCode, suffix: str = ".scale"
) -> list[dict[str, str]]:
    """The derivation's constants named ``*<suffix>`` for a template: attention-logit scales
    (``.scale``) or residual-branch multipliers (``.residual``)."""
    values = d.evaluate_constants(widths)
    return [
        {
            "name": literal(name),
            "value": number(values[name]),
            "comment": expression_comment(scale=expr),
            "code": code(expr),
        }
        for name, expr in d.constants.items()
        if name.endswith(suffix)
    ]
