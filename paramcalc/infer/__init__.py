"""Spec inference: the spec of a live torch model, read off the model itself.

    spec = paramcalc.infer_spec(factory, widths={"d_model": {"base": 256}, "n_heads": {"base": 4},
                                                 "vocab": 1000})

``factory(widths) -> nn.Module`` builds the model as its user does. It is called on the meta device
(no memory, no init) at the base widths, once more per scaling width with that width doubled, and
once with every scaling width tripled (:mod:`paramcalc.infer.probe`): each tensor dimension must be
a monomial in the widths (``3*d_model``, ``d_model/n_heads``), found from the builds and checked on the
last one. Each module becomes a spec entry by its kind (:mod:`paramcalc.infer.recognise`: linear,
HF ``Conv1D``, embedding, convolution, norms, attention, raw parameters); weights shared between
modules become ``tie:``. The result is an ordinary :class:`~paramcalc.Spec`: ``spec.to_yaml()``
writes it as a file the user can read and edit, and ``load_spec`` of that file derives the same.
Whatever cannot be inferred is one :class:`~paramcalc.FactoryError` naming every tensor concerned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from paramcalc.errors import FactoryError, Problem
from paramcalc.infer.probe import Build, build_on_meta, fit_monomial

__all__ = ["Inference", "infer_spec"]


def _declared(widths: Mapping[str, Any], source: str) -> tuple[dict[str, int], list[str]]:
    """``{"d": {"base": 256}, "vocab": 1000}`` -> base values, and the names that scale."""
    base: dict[str, int] = {}
    scaling: list[str] = []
    problems = []
    for name, value in widths.items():
        if isinstance(value, Mapping) and set(value) == {"base"}:
            value, scales = value["base"], True
        else:
            scales = False
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(Problem(f"widths.{name}", f"expected a positive integer or {{base: integer}}, "
                                                      f"got {value!r}"))
            continue
        base[name] = value
        if scales:
            scaling.append(name)
    if problems:
        raise FactoryError(problems, source=source)
    if not scaling:
        raise FactoryError([Problem("widths", "no width scales: mark those that do as {base: N}, e.g. "
                                              "{'d_model': {'base': 256}}")], source=source)
    return base, scaling


class Inference:
    """The builds of one factory and the monomials read from them."""

    def __init__(
        self, factory: Callable[[dict[str, int]], Any], widths: Mapping[str, Any], name: str
    ) -> None:
        self.name = name
        from paramcalc.infer.depth import block_list

        self.base, declared = _declared(widths, name)
        self.fixed = {k: v for k, v in self.base.items() if k not in declared}
        self.builds: dict[str | None, Build] = {None: build_on_meta(factory, self.base, name)}
        self.problems: list[Problem] = []
        #: Depth widths (a block count) -> the path of the list of blocks they count.
        self.depth: dict[str, str] = {}
        for w in declared:
            doubled = build_on_meta(factory, {**self.base, w: 2 * self.base[w]}, name)
            found = block_list(self.builds[None].model, doubled.model, self.base[w], w)
            if isinstance(found, Problem):
                self.problems.append(found)
            elif found is not None:
                self.depth[w] = found
            else:
                self.builds[w] = doubled
        if self.problems:
            raise FactoryError(self.problems, source=f"model of {name}")
        #: The widths that scale dimensions (the depth is no dimension).
        self.scaling = [w for w in declared if w not in self.depth]
        self.declared = declared
        tripled = {**self.base, **{w: 3 * self.base[w] for w in self.scaling}}
        self.check = build_on_meta(factory, tripled, name)
        self._scaling_texts: set[str] = set()

    def dim(self, read: Callable[[Any], int], where: str) -> str | int | None:
        """A dimension read off every build (``read(model)``) as a spec expression."""
        try:
            base = read(self.builds[None].model)
            values = {w: read(self.builds[w].model) for w in self.scaling}
            check = read(self.check.model)
        except (AttributeError, TypeError, ValueError) as exc:
            self.problems.append(Problem(where, f"the models built at other widths differ: {exc}"))
            return None
        mono = fit_monomial(values, base, (self.check.widths, check), self.base)
        if mono is None:
            seen = ", ".join(f"{v} with {w} doubled" for w, v in values.items())
            self.problems.append(Problem(where, (
                f"is {base} at the base widths, {seen}, {check} with every scaling width tripled: not "
                "a product of powers of the widths. Check which widths the factory reads, or write "
                "the spec by hand")))
            return None
        if not mono.powers:
            # A fixed dimension reads as the fixed width of that value, when exactly one has it.
            named = [w for w, v in self.fixed.items() if v == base]
            return named[0] if len(named) == 1 else base
        text = mono.text()
        self._scaling_texts.add(text)
        return text

    def scales(self, dim: Any) -> bool:
        return isinstance(dim, str) and dim in self._scaling_texts


def infer_spec(
    factory: Callable[[dict[str, int]], Any], widths: Mapping[str, Any], *, name: str | None = None,
) -> Any:
    """The spec of the model ``factory(widths)`` builds (see the module docstring).

    ``widths`` maps each width symbol the factory reads to an integer (fixed) or ``{"base": N}``
    (scaling, ``N`` the width the hyperparameters were tuned at). Raises
    :class:`~paramcalc.FactoryError` for a factory that fails or a model that cannot be inferred.
    """
    from paramcalc.infer.recognise import Recogniser
    from paramcalc.spec import load_spec

    label = name or getattr(factory, "__qualname__", None) or type(factory).__name__
    inference = Inference(factory, widths, label)
    rec = Recogniser(inference.builds[None].model, inference)
    rec.run()
    problems = inference.problems + rec.problems
    if problems:
        raise FactoryError(problems, source=f"model of {label}")
    if not rec.entries:
        raise FactoryError([Problem("model", "has no parameters")], source=f"model of {label}")
    from paramcalc.infer.depth import fold_blocks

    entries = rec.entries
    for width, path in inference.depth.items():
        folded = fold_blocks(entries, path, width, inference.base[width])
        if isinstance(folded, Problem):
            raise FactoryError([folded], source=f"model of {label}")
        entries = folded
    spec_widths: dict[str, Any] = {
        w: ({"base": v} if w in inference.declared else v) for w, v in inference.base.items()
    }
    data = {"name": _spec_name(label), "widths": spec_widths, "layers": entries}
    spec = load_spec(data)
    return spec.annotated(source=f"inferred from {label}", notes=tuple(rec.notes))


def _spec_name(label: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label.rsplit(":", 1)[-1]) or "model"
