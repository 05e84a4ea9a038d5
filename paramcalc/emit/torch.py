"""``--emit torch``: a Python module (importing only ``math`` and ``torch``) that applies a derivation.

It defines ``init_parameters(model, widths=None)``, ``param_groups(model, lr, widths=None)``,
``apply_multipliers(model, widths=None)``, the per-tensor values as the dict ``PARAMETERS`` and
the attention-logit scales (CONTRACT.md, "Emitted PyTorch code"). Every number is computed at run
time from the derived expression, printed here; the template only lays the strings out.

>>> import paramcalc
>>> from paramcalc.emit import emit
>>> code = emit(paramcalc.derive("examples/mlp.yaml", "mup", "adam"), "torch")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paramcalc.emit.python import (
    WidthCode,
    constant_entries,
    header,
    literal,
    tensor_entry,
    width_defaults,
)
from paramcalc.emit.templating import render
from paramcalc.engine import Derivation
from paramcalc.errors import SpecError

__all__ = ["emit_torch", "layer_multiplier_exprs", "torch_context"]



def layer_multiplier_exprs(d: Derivation) -> dict[str, tuple[Any, Any]]:
    """Each layer with parameters -> (weight multiplier, bias multiplier or None).

    A layer that uses another layer's tensor (``tie:``) computes with the multiplier of its own
    use (:attr:`Derivation.tied`), not the owner's.
    """
    out: dict[str, tuple[Any, Any]] = {}
    for layer in d.spec.layers:
        if not layer.params:
            continue
        if not layer.definition.hooks_forward:
            _check_no_multiplier(d, layer)
            continue
        weight = layer.params.get("weight")
        bias = layer.params.get("bias")
        if layer.name in d.tied:
            w_mult = d.tied[layer.name].multiplier
        else:
            w_mult = d[weight].multiplier if weight is not None else 1
        out[layer.name] = (w_mult, d[bias].multiplier if bias is not None else None)
    return out


def _check_no_multiplier(d: Derivation, layer: Any) -> None:
    """A layer with no module to hook (a raw ``parameter``) cannot take a forward multiplier."""
    import sympy

    for tensor in layer.params.values():
        if sympy.simplify(d[tensor].multiplier - 1) != 0:
            raise SpecError(
                f"layers: {layer.name}: {d.parametrization} gives {tensor} the forward multiplier "
                f"{d[tensor].multiplier}, but a raw parameter has no module to apply it; use the "
                "parametrization's form without multipliers (the abc-equivalent init and lr)",
                source=d.spec.source,
            )


def torch_context(d: Derivation, widths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The template's strings: literals, numbers and Python expressions over the widths ``w``.

    ``widths`` (default: the spec's values) become the defaults of the emitted functions.
    """
    code = WidthCode.for_derivation(d)
    at = d.resolve_widths(widths)
    values = d.evaluate(at)
    tensors = [tensor_entry(d, name, p.tensor.shape, values[name], at, code) for name, p in d.items()]
    return {
        "h": header(d, "torch"),
        **optimizer_context(d),
        "widths": width_defaults(d, at),
        "tensors": tensors,
        "tied": [{"layer": literal(layer), "tensor": literal(ts.tensor)} for layer, ts in d.tied.items()],
        "layers": [
            {
                "name": literal(layer),
                "weight": code(w_mult),
                "bias": "None" if b_mult is None else code(b_mult),
            }
            for layer, (w_mult, b_mult) in layer_multiplier_exprs(d).items()
        ],
        "constants": constant_entries(d, at, code),
        "residuals": constant_entries(d, at, code, ".residual"),
        "packed": [{"layer": literal(layer.name), "in_proj": literal(layer.attrs["projections"]["qkv"]),
                    "out_proj": literal(layer.attrs["projections"]["o"])}
                   for layer in d.spec.layers if layer.attrs.get("packed") and layer.kind == "attention"],
    }


def optimizer_context(d: Derivation) -> dict[str, str]:
    """The optimizers the emitted code builds: torch class per optimizer name, which carry eps,
    the sentence saying what trains what, and the source of :class:`paramcalc.optim.Lion` if used."""
    laws = list(d.laws.values())
    titles = [law.title for law in laws if law.has_eps]
    if len(laws) == 1:
        sentence = f"torch.optim.{laws[0].torch_class}" if laws[0].name != "lion" else "Lion (defined below)"
    else:
        sentence = (f"torch.optim.{laws[0].torch_class} for the tensors it trains (the hidden matrices) and "
                    + " and ".join(f"torch.optim.{law.torch_class}" for law in laws[1:]) + " for the others")
    uses_lion = "lion" in d.laws
    return {
        "torch_optimizers": "{" + ", ".join(f"{literal(law.name)}: {literal(law.torch_class)}"
                                            for law in laws) + "}",
        "eps_optimizers": "{" + ", ".join(literal(law.name) for law in laws if law.has_eps) + "}"
        if titles else "set()",
        "eps_titles": " and ".join(titles) or "an optimizer with an epsilon (none here)",
        "optimizers_sentence": sentence,
        "lion_lookup": "Lion if name == 'lion' else " if uses_lion else "",
        "lion_source": _lion_source() if uses_lion else "",
    }


def _lion_source() -> str:
    """The source of :class:`paramcalc.optim.Lion`, read from its file (torch need not be importable)."""
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "optim.py"
    source = path.read_text(encoding="utf-8")
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Lion")
    return ast.get_source_segment(source, node, padded=True) or ""


def emit_torch(d: Derivation, widths: Mapping[str, int] | None = None) -> str:
    """The PyTorch module for ``d``. Its functions take widths at run time; ``widths`` (default:
    the spec's values, bases for scaling widths) are their defaults."""
    return render("torch/params.py.j2", **torch_context(d, widths))
