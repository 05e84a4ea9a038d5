"""Tables of derivations: one parametrization, or spectral | muP | NTP | SP side by side.

Per parameter tensor: the init std (sigma), the learning-rate factor (eta) and the forward
multiplier, as expressions and, at given widths, as numbers. Layers that use another layer's
tensor (``tie:``) get a row of their own (the multiplier of their use and what it trains with);
attention-logit scales get a second table.

The builder here knows nothing of the output language: a :class:`TableFormat` (one per target,
in :mod:`paramcalc.emit.markdown`, :mod:`~paramcalc.emit.latex`, :mod:`~paramcalc.emit.html`)
prints each cell, and the target's template lays the printed strings out. Rows of repeated blocks
that are equal in every column collapse into one (``blocks.*.attn.q.weight``, x12).

>>> from paramcalc.emit.tables import render_table
>>> print(render_table("examples/mlp.yaml", "markdown", optimizers=["sgd"]))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sympy

from paramcalc.emit.printing import exponent_text
from paramcalc.emit.table_notes import table_notes
from paramcalc.emit.templating import render
from paramcalc.engine import Derivation, derive
from paramcalc.errors import SpecError, UsageError, UserError, lookup
from paramcalc.spec import Spec, load_spec
from paramcalc.symbolic import theta_exponent

__all__ = ["Document", "Grid", "TableFormat", "collapse_blocks", "derivation_document", "get_format",
           "number_text", "render_document", "render_table", "table_document"]

QUANTITIES = ("init_std", "lr", "multiplier")
#: Every column a derivation's group may have; eps, weight_decay and optimizer only where they say
#: something (:func:`_columns`).
COLUMNS = (*QUANTITIES, "eps", "weight_decay", "optimizer", "depth")

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def number_text(value: float) -> str:
    """Four significant digits: ``0.01562``, ``4``, ``1.526e-05``."""
    return f"{value:.4g}"


@dataclass(frozen=True)
class TableFormat:
    """How one output language prints a table's cells. Everything user-controlled (spec and layer
    names) passes through ``name`` or ``text``, which escape it for the language."""

    name: str
    template: str  # under templates/, e.g. "latex/table.tex.j2"
    text: Callable[[str], str]  # escaped plain text
    name_cell: Callable[[str], str]  # a tensor or layer name
    shape: Callable[[Sequence[sympy.Expr]], str]  # a tensor's shape
    cell: Callable[[sympy.Expr, float | None], str]  # a derived expression, and its number
    exponents: Callable[[Sequence[str]], str]  # Theta-exponents of one row
    repeated: Callable[[str, int], str]  # a collapsed name cell and its count
    tied: Callable[[str, str], str]  # "layer uses tensor"
    headers: Mapping[str, str]  # column key -> header


@dataclass(frozen=True)
class Grid:
    """One table, already printed: ``groups`` span the columns after the ``lead`` first ones."""

    caption: str
    lead: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    rows: tuple[tuple[str, ...], ...]
    collapsed: bool = False  # some rows stand for every block of a repeated block

    @property
    def columns(self) -> tuple[str, ...]:
        return self.lead + tuple(c for _, cols in self.groups for c in cols)

    @property
    def flat_columns(self) -> tuple[str, ...]:
        """Column headers with their group's title in front, for languages without spans."""
        return self.lead + tuple(
            f"{title} {c}" if title else c for title, cols in self.groups for c in cols
        )

    @property
    def latex_columns(self) -> str:
        """A ``tabular`` column spec: ``l`` per lead column, ``c`` per group column, ``|`` between."""
        return "l" * len(self.lead) + "".join("|" + "c" * len(cols) for _, cols in self.groups)

    @property
    def has_group_titles(self) -> bool:
        return any(title for title, _ in self.groups)

    @property
    def spans(self) -> tuple[tuple[str, int], ...]:
        return tuple((title, len(cols)) for title, cols in self.groups)


@dataclass(frozen=True)
class Document:
    """What a template renders: a title, notes, and sections of grids."""

    title: str
    notes: tuple[str, ...]
    sections: tuple[tuple[str, tuple[Grid, ...]], ...]
    derivations: tuple[Derivation, ...] = ()  # what the tables show


def get_format(name: str) -> TableFormat:
    from paramcalc.registry import TABLE_FORMATS

    module, attr = lookup(TABLE_FORMATS, name, "table format")
    return getattr(importlib.import_module(module), attr)


# Rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    name: str  # tensor name, or the using layer for a tied use
    kind: str  # "param" or "tied"
    role: str
    shape: tuple[sympy.Expr, ...]
    per: tuple[dict[str, Any], ...]  # per derivation: column -> expression (optimizer: its name)
    tensor: str = ""  # for a tied use: the tensor it uses


def _cells(d: Derivation, name: str, tied: Any = None) -> dict[str, Any]:
    """A tensor's expressions by column; a tied use takes its own init, lr and multiplier and the
    factors of the tensor it uses (the one the optimizer holds)."""
    p = d[name]
    own = tied if tied is not None else p
    return {"init_std": own.init_std, "lr": own.lr, "multiplier": own.multiplier, "eps": p.eps,
            "weight_decay": p.weight_decay, "optimizer": p.optimizer, "depth": (own.lr, p.eps)}


def _rows(derivations: Sequence[Derivation]) -> list[_Row]:
    first = derivations[0]
    rows = []
    for name, p in first.items():
        rows.append(_Row(name, "param", p.tensor.role, tuple(p.tensor.shape),
                         tuple(_cells(d, name) for d in derivations)))
    for layer, ts in first.tied.items():
        rows.append(_Row(layer, "tied", ts.role, (),
                         tuple(_cells(d, ts.tensor, d.tied[layer]) for d in derivations), tensor=ts.tensor))
    return rows


def _columns(d: Derivation, rows: Sequence[_Row], i: int, single: bool) -> tuple[str, ...]:
    """The columns of derivation ``i``: init std and lr; the multiplier where one is not 1 (always
    for one derivation); Adam's epsilon factor where one is not 1; the weight-decay factor under a
    decoupled decay (AdamW, Lion, Muon); the optimizer where two train the tensors (Muon, AdamW);
    where depth scales, the exponents in ``L`` of the learning rate and epsilon
    (:mod:`paramcalc.engine.depth`)."""
    laws = d.laws.values()
    shown = {
        "multiplier": single or any(r.per[i]["multiplier"] != 1 for r in rows),
        "eps": any(r.per[i]["eps"] != 1 for r in rows),
        "weight_decay": any(law.decoupled_decay for law in laws),
        "optimizer": len(d.laws) > 1,
        "depth": bool(d.spec.depth_blocks),
    }
    return tuple(c for c in COLUMNS if shown.get(c, True))


def _values(d: Derivation, widths: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Numbers by row name at ``widths``; a tied use's factors are its tensor's."""
    values = d.evaluate(widths)
    for layer, tied in d.evaluate_tied(widths).items():
        values[layer] = {**values[d.tied[layer].tensor], **tied}
    return values


def collapse_blocks(
    rows: Sequence[tuple[str, tuple[str, ...]]],
    repeated: Callable[[str, int], str],
    name_cell: Callable[[str], str] = str,
) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """Merge rows ``(name, cells)`` whose names differ only in block indices when the cells of all
    of them are equal (``blocks.*.attn.q.weight``, named by ``repeated(pattern, count)``); other
    names go through ``name_cell``. Also say whether any merged."""
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, tuple[str, ...]]]] = {}
    per_pattern: dict[str, int] = {}
    for name, cells in rows:
        pattern = _INDEX.sub("*", name)
        groups.setdefault((pattern, cells), []).append((name, cells))
        per_pattern[pattern] = per_pattern.get(pattern, 0) + 1
    out = []
    for (pattern, cells), members in groups.items():
        if len(members) > 1 and len(members) == per_pattern[pattern]:
            out.append((repeated(pattern, len(members)), *cells))
        else:
            out.extend((name_cell(name), *c) for name, c in members)
    return tuple(out), len(out) < len(rows)


def _grid(
    fmt: TableFormat,
    derivations: Sequence[Derivation],
    widths: Mapping[str, int] | None,
    *,
    single: bool,
    caption: str,
) -> Grid:
    """The parameter table: per tensor (and tied use) a row, per derivation a group of columns."""
    rows = _rows(derivations)
    values = [_values(d, widths) for d in derivations] if widths is not None else None
    columns = [_columns(d, rows, i, single) for i, d in enumerate(derivations)]
    groups = []
    for i, d in enumerate(derivations):
        cols = [fmt.headers[c] for c in columns[i]]
        if single:
            cols.append(fmt.headers["exponents"])
        groups.append(("" if single else _title(fmt, d.parametrization), tuple(cols)))
    param_rows: list[tuple[str, tuple[str, ...]]] = []
    tied_rows: list[tuple[str, ...]] = []
    for r in rows:
        cells: list[str] = [fmt.text(r.role)]
        if single:
            cells.append(fmt.shape(r.shape) if r.shape else "")
        for i, d in enumerate(derivations):
            for q in columns[i]:
                expr = r.per[i][q]
                if q == "optimizer":
                    cells.append(fmt.text(expr))
                    continue
                if q == "depth":
                    cells.append(fmt.exponents([exponent_text(theta_exponent(e, d.spec.depth_symbols))
                                                for e in expr]))
                    continue
                value = values[i][r.name][q] if values is not None else None
                cells.append(fmt.cell(expr, _shown(expr, value)))
            if single:
                cells.append(fmt.exponents([_exponent(d, r, k) for k in range(3)]))
        if r.kind == "param":
            param_rows.append((r.name, tuple(cells)))
        else:
            tied_rows.append((fmt.tied(r.name, r.tensor), *cells))
    collapsed_rows, collapsed = collapse_blocks(param_rows, fmt.repeated, fmt.name_cell)
    lead = [fmt.headers["tensor"], fmt.headers["role"]]
    if single:
        lead.append(fmt.headers["shape"])
    return Grid(caption, tuple(lead), tuple(groups), collapsed_rows + tuple(tied_rows), collapsed)


def _constants_caption(spec: Spec) -> str:
    return "Attention-logit and residual-branch scales" if spec.depth_blocks else "Attention-logit scales"


def _shown(expr: sympy.Expr, value: float | None) -> float | None:
    """The number to print next to ``expr``: none where the expression is a number itself."""
    return None if expr.is_Number else value


def _title(fmt: TableFormat, name: str) -> str:
    """A parametrization's or optimizer's heading in ``fmt`` (the title lives on the object)."""
    from paramcalc.engine import OPTIMIZERS, RULES
    from paramcalc.engine.rules import title_in

    return title_in(RULES[name] if name in RULES else OPTIMIZERS[name], fmt.name)


def _exponent(d: Derivation, r: _Row, k: int) -> str:
    if r.kind == "param":
        return exponent_text(d[r.name].exponents[QUANTITIES[k]])
    return exponent_text(d.tied_exponents()[r.name][QUANTITIES[k]])


def _constants_grid(
    fmt: TableFormat, derivations: Sequence[Derivation], widths: Mapping[str, int] | None,
    caption: str,
) -> Grid | None:
    first = derivations[0]
    if not first.constants:
        return None
    values = [d.evaluate_constants(widths) for d in derivations] if widths is not None else None
    rows = []
    for name in first.constants:
        cells = []
        for i, d in enumerate(derivations):
            expr = d.constants[name]
            cells.append(fmt.cell(expr, None if values is None else _shown(expr, values[i][name])))
        rows.append((name, tuple(cells)))
    single = len(derivations) == 1
    groups = (("", tuple(
        fmt.headers["scale"] if single else _title(fmt, d.parametrization) for d in derivations
    )),)
    collapsed = collapse_blocks(rows, fmt.repeated, fmt.name_cell)
    return Grid(caption, (fmt.headers["constant"],), groups, *collapsed)


# Documents ------------------------------------------------------------------------------------


def derivation_document(
    d: Derivation, fmt: TableFormat | str, widths: Mapping[str, int] | None = None
) -> Document:
    """One derivation: shape, expressions, exponents, numbers at ``widths`` (default: the spec's)."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    at = d.resolve_widths(widths)
    title = (
        fmt.text(f"{d.spec.name}: ") + _title(fmt, d.parametrization)
        + fmt.text(f", {d.optimizer.title} ({d.form} form)")
    )
    grids = [_grid(fmt, [d], at, single=True, caption=title)]
    constants = _constants_grid(fmt, [d], at, fmt.text(_constants_caption(d.spec)))
    if constants is not None:
        grids.append(constants)
    return Document(title, tuple(table_notes(fmt, at, True, grids, [d])), (("", tuple(grids)),), (d,))


def table_document(
    spec: Spec | Mapping[str, Any] | str,
    fmt: TableFormat | str,
    *,
    optimizers: Iterable[str] | None = None,
    parametrizations: Iterable[str] | None = None,
    widths: Mapping[str, int] | None = None,
    depth_alpha: float | str | None = None,
) -> Document:
    """Parametrizations side by side, one section per optimizer.

    Numbers appear only when ``widths`` is given (other widths then take the spec's values).
    ``depth_alpha``: see :func:`paramcalc.derive`.
    """
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    loaded = load_spec(spec)  # type: ignore[arg-type]
    from paramcalc import registry

    params = tuple(parametrizations or registry.PARAMETRIZATIONS)
    opts = tuple(optimizers or registry.OPTIMIZERS)
    at = None
    sections, every = [], []
    for opt in opts:
        derivations = [derive(loaded, p, opt, depth_alpha=depth_alpha).at_depth(widths) for p in params]
        every += derivations
        if widths is not None and at is None:
            at = derivations[0].resolve_widths(widths)
        title = _title(fmt, opt)
        caption = fmt.text(f"{loaded.name}, ") + title
        grids = [_grid(fmt, derivations, at, single=False, caption=caption)]
        constants = _constants_grid(
            fmt, derivations, at, caption + fmt.text(": " + _constants_caption(loaded).lower())
        )
        if constants is not None:
            grids.append(constants)
        sections.append((title, tuple(grids)))
    doc_title = fmt.text(f"{loaded.name}: ") + fmt.text(", ").join(_title(fmt, p) for p in params)
    notes = table_notes(fmt, at, False, [g for _, grids in sections for g in grids], every)
    return Document(doc_title, tuple(notes), tuple(sections), tuple(every))


def render_document(doc: Document, fmt: TableFormat | str, level: int = 2) -> str:
    """Render ``doc`` with the format's template; ``level`` is the heading level of its title
    (Markdown and HTML), for embedding in a larger page."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    from paramcalc import __version__

    return render(fmt.template, doc=doc, version=__version__, level=level, h1="#" * level,
                  h2="#" * (level + 1))


def render_table(
    spec: Spec | Mapping[str, Any] | str,
    fmt: str,
    *,
    optimizers: Iterable[str] | None = None,
    parametrizations: Iterable[str] | None = None,
    widths: Mapping[str, int] | None = None,
    depth_alpha: float | str | None = None,
    warn: bool = False,
) -> str:
    """``paramcalc table``: the side-by-side table of ``spec`` in ``fmt`` (markdown, latex, html);
    ``warn``: a warning for each tied use more than 2x off its role (the command line's)."""
    try:
        table_fmt = get_format(fmt)
    except ValueError as exc:
        raise SpecError(str(exc), source="command line") from None
    try:
        doc = table_document(spec, table_fmt, optimizers=optimizers, parametrizations=parametrizations,
                             widths=widths, depth_alpha=depth_alpha)
    except ValueError as exc:  # a depth_alpha out of range, or given where depth does not scale
        if isinstance(exc, UserError):
            raise
        raise UsageError(str(exc), source="command line") from None
    if warn:
        from paramcalc.report import warn_tie_gaps

        warn_tie_gaps(doc.derivations, widths)
    return render_document(doc, table_fmt)
