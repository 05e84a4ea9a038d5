"""The width assignments of a sweep: one value of the spec's first scaling width per run.

Every other scaling width follows in proportion to its base (``n_heads = 12 * d_model / 768``) and
must come out an integer; fixed widths keep their values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy

from paramcalc.errors import Problem, SpecError
from paramcalc.spec import Spec
from paramcalc.widths import proportional

__all__ = ["attention_heads", "lead_width", "sweep"]


def lead_width(spec: Spec) -> str:
    """The name of the spec's first scaling width: the one a sweep varies (its ``n``)."""
    return next(w.name for w in spec.widths.values() if w.scaling and not w.depth)


def sweep(spec: Spec, values: Iterable[int]) -> list[dict[str, int]]:
    """Width assignments for a sweep over the spec's first scaling width.

    Raises :class:`SpecError` naming the width that does not come out an integer.

    >>> import paramcalc
    >>> spec = paramcalc.load_spec({"name": "m", "widths": {"d": {"base": 64}, "h": {"base": 2}},
    ...                             "layers": [{"name": "fc", "fan_in": "d", "fan_out": "h"}]})
    >>> sweep(spec, [32, 128])
    [{'d': 32, 'h': 1}, {'d': 128, 'h': 4}]
    """
    scaling = [w for w in spec.widths.values() if w.scaling and not w.depth]
    if not scaling:
        raise SpecError([Problem("widths", "no scaling width (a {base: N} entry) to sweep over")],
                        source=spec.source)
    lead = scaling[0]
    out: list[dict[str, int]] = []
    problems: list[Problem] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(Problem("--widths", f"expected positive integers, got {value!r}"))
            continue
        at, wrong = proportional(spec, lead.name, value)
        problems += wrong
        out.append(at)
    if problems:
        raise SpecError(problems, source=spec.source)
    return out


def attention_heads(spec: Spec, at: Mapping[str, int]) -> dict[str, int]:
    """Heads of each attention layer at ``at`` (the logits' group size, :mod:`paramcalc.verify.measure`)."""
    subs = {spec.widths[k].symbol: v for k, v in at.items()}
    return {layer.name: int(sympy.sympify(layer.attrs["n_heads"]).xreplace(subs))
            for layer in spec.layers if layer.kind == "attention"}
