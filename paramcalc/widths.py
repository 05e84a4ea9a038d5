"""Widths in proportion: every scaling width from one of them.

A model's scaling widths grow together (``n_heads = 12 * d_model / 768``, ``d_ff = 4 * d_model``
where ``d_ff`` is its own width): given one, the others follow their bases in the same ratio and must
come out integers; fixed widths keep their values. ``paramcalc verify`` sweeps this way, and the
emitted code has the same ``widths_at``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from paramcalc.errors import Problem, SpecError

__all__ = ["fixed_width_message", "proportional", "resolve_widths", "widths_at"]


def proportional(spec: Any, lead: str, value: int) -> tuple[dict[str, int], list[Problem]]:
    """Every width of ``spec`` with scaling width ``lead`` at ``value`` and the other scaling widths
    in proportion to their bases; the problems name each width that is not an integer there."""
    base = spec.widths[lead].value
    at = {w.name: w.value for w in spec.widths.values()}
    problems = []
    for w in spec.widths.values():
        if not w.scaling or w.depth:  # a depth is its own axis: widths in proportion leave it
            continue
        exact = Fraction(w.value * value, base)
        if exact.denominator != 1:
            problems.append(Problem(
                f"widths.{w.name}",
                f"{lead} = {value} makes {w.name} = {w.value} * {value} / {base} = {float(exact):g}, not an "
                f"integer; choose {lead} a multiple of {base // math.gcd(base, w.value)}",
            ))
        at[w.name] = int(exact)
    return at, problems


def widths_at(spec: Any, **given: int) -> dict[str, int]:
    """All widths of ``spec`` (a Spec, a Derivation, or what :func:`~paramcalc.load_spec` reads) from
    those ``given``: the first scaling width given sets the ratio to the base widths, every scaling
    width not given follows it, fixed widths keep their values.

    >>> import paramcalc
    >>> spec = paramcalc.load_spec({"name": "m", "widths": {"d": {"base": 64}, "h": {"base": 2}, "v": 10},
    ...                             "layers": [{"name": "fc", "fan_in": "d", "fan_out": "h"}]})
    >>> widths_at(spec, d=256)
    {'d': 256, 'h': 8, 'v': 10}
    """
    from paramcalc.spec import Spec, load_spec

    spec = getattr(spec, "spec", spec)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    resolved = resolve_widths(spec, given)  # unknown names, bad values, fixed widths changed
    lead = next((name for name in given if spec.widths[name].scaling and not spec.widths[name].depth), None)
    if lead is None:
        return resolved
    at, problems = proportional(spec, lead, resolved[lead])
    problems = [p for p in problems if p.path.removeprefix("widths.") not in given]
    if problems:
        raise SpecError(problems, source=spec.source)
    return {**at, **{k: v for k, v in resolved.items() if k in given}}


def resolve_widths(spec: Any, widths: Mapping[str, int] | None) -> dict[str, int]:
    """``widths`` completed with the spec's values. A fixed width (or repeat count) may be passed
    only with its own value: another would silently change roles (a fixed ``n_kv_heads`` makes
    ``k_proj`` a readout) or leave blocks the spec does not list untouched."""
    values = {w.name: w.value for w in spec.widths.values()}
    problems = []
    for key, value in (widths or {}).items():
        if key not in values:
            known = ", ".join(values) or "none"
            problems.append(Problem(f"widths.{key}", f"unknown width symbol (declared: {known})"))
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(Problem(f"widths.{key}", f"expected a positive integer, got {value!r}"))
        elif not spec.widths[key].scaling and value != values[key]:
            problems.append(Problem(f"widths.{key}", fixed_width_message(spec, key, value)))
        else:
            values[key] = value
    if problems:
        raise SpecError(problems, source=spec.source)
    if widths:
        _check_dimensions(spec, values)
    return values


def _check_dimensions(spec: Any, values: Mapping[str, int]) -> None:
    """Every tensor dimension positive at ``values`` (``d - 8`` at ``d = 8`` is not): a zero or
    negative one would divide by zero or take the root of a negative number further on."""
    import sympy

    at = {w.symbol: sympy.Integer(values[w.name]) for w in spec.widths.values()}
    seen: set[Any] = set()
    for t in spec.tensors:
        for dim in (t.fan_in, t.fan_out, *t.shape):
            if dim in seen:
                continue
            seen.add(dim)
            value = sympy.sympify(dim).xreplace(at)
            if not value > 0:
                shown = ", ".join(f"{k}={v}" for k, v in values.items() if spec.widths[k].scaling)
                raise SpecError([Problem("widths", f"{t.name}: dimension {dim} is {value} at {shown}; "
                                         "every dimension must stay positive")], source=spec.source)


def fixed_width_message(spec: Any, name: str, value: int) -> str:
    fixed = spec.widths[name].value
    return (f"width {name!r} is fixed at {fixed} in spec {spec.name!r}, got {value}; to let it change, "
            f"declare it scaling: `{name}: {{base: {fixed}}}`")
