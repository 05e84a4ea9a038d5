"""A derivation applied to a torch model in one call: the emitted module's behaviour as a library.

    d = paramcalc.derive(spec, "mup", "adam")
    paramcalc.torch.apply(model, d, widths)           # init in place + forward multipliers + attention scales
    opt = torch.optim.AdamW(paramcalc.torch.param_groups(model, d, lr=3e-4, widths=widths,
                                                         weight_decay=0.1))

Both run the code ``paramcalc derive --emit torch`` writes (executed once per derivation), so a
model treated here and one treated with the generated file are treated identically, number for
number; nothing is derived again. Attention-logit scales (``d.constants``) are set on each
attention layer's module: its ``scaling`` attribute (Hugging Face attention classes multiply
``q . k`` by it) or ``scale`` (paramcalc's own :class:`~paramcalc.modules.Attention`).

Weight decay: torch applies a group's ``weight_decay`` to every tensor in it, gains and biases
included. :func:`param_groups` gives decay only to weight matrices that are not embedding
tables (unless ``decay`` says otherwise), keeps the others in groups with ``weight_decay=0``, and
by default keeps each tensor's ``lr * weight_decay`` at its value at the base widths
("independent" decay, as mup's MuAdamW multiplies weight decay by the width multiplier it divides
the learning rate by; Wortsman et al. 2023).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from torch import nn

from paramcalc.errors import UsageError

__all__ = ["apply", "attention_modules", "decay_factors", "emitted", "install_attention_scales",
           "param_groups", "set_attention_scales"]

_CACHE: list[tuple[Any, dict[str, Any]]] = []  # (derivation, namespace): the last few, held


def emitted(d: Any) -> dict[str, Any]:
    """The namespace of the emitted torch module of ``d`` (executed once, kept for reuse)."""
    from paramcalc.emit import emit

    for held, namespace in _CACHE:
        if held is d:
            return namespace
    namespace = {"__name__": f"paramcalc_emitted_{d.spec.name}"}
    exec(compile(emit(d, "torch"), f"<emitted torch code for {d.spec.name}>", "exec"), namespace)  # noqa: S102
    _CACHE.insert(0, (d, namespace))
    del _CACHE[4:]
    return namespace


def _call(d: Any, fn: str, *args: Any) -> Any:
    try:
        return emitted(d)[fn](*args)
    except ValueError as exc:  # the emitted code says what does not match the spec
        raise UsageError(str(exc), source=d.spec.source) from None


def attention_modules(model: nn.Module, d: Any) -> dict[str, tuple[nn.Module | None, str | None]]:
    """Each attention layer of the derivation -> (its module, or None when the model has no such
    submodule; the attribute holding its logit scale: ``scaling``, ``scale``, or None)."""
    out: dict[str, tuple[nn.Module | None, str | None]] = {}
    for key in d.constants:
        if not key.endswith(".scale"):
            continue
        layer = key.removesuffix(".scale")
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            out[layer] = (None, None)
            continue
        numeric = [a for a in ("scaling", "scale") if isinstance(getattr(module, a, None), (int, float))]
        out[layer] = (module, numeric[0] if numeric else None)
    return out


def install_attention_scales(model: nn.Module, d: Any, scales: Mapping[str, float]) -> list[str]:
    """Set each attention module's logit scale from ``{"<layer>.scale": value}`` (the emitted
    ``attention_scales(widths)``); return the layers that have no ``scaling``/``scale`` to set."""
    missing = []
    for layer, (module, attr) in attention_modules(model, d).items():
        if attr is None:
            missing.append(layer)
        else:
            setattr(module, attr, float(scales[f"{layer}.scale"]))
    return missing


def set_attention_scales(model: nn.Module, d: Any, widths: Mapping[str, int] | None = None) -> None:
    """Set every attention layer's logit scale to the derivation's at ``widths``; an attention layer
    whose scale cannot be set is an error (its logits would keep their own scale, silently)."""
    missing = install_attention_scales(model, d, _call(d, "attention_scales", widths))
    if missing:
        raise UsageError(
            f"attention layers {missing} have no `scaling` or `scale` attribute to set; pass "
            "attention_scales(widths) from the emitted code to their attention as `scale=`",
            source=d.spec.source,
        )


def apply(
    model: nn.Module, d: Any, widths: Mapping[str, int] | None = None, *, generator: Any = None
) -> nn.Module:
    """Re-initialise every spec tensor of ``model``, install its forward multipliers and set its
    attention scales, for the derivation ``d`` at ``widths`` (the integers the model is built with;
    left out: the spec's). Returns ``model``."""
    _call(d, "init_parameters", model, widths, generator)
    _call(d, "apply_multipliers", model, widths)
    set_attention_scales(model, d, widths)
    return model


def param_groups(
    model: nn.Module, d: Any, lr: float, widths: Mapping[str, int] | None = None, *,
    weight_decay: float = 0.0, decay: Collection[str] = ("weight",),
    weight_decay_policy: str = "independent",
) -> list[dict[str, Any]]:
    """Parameter groups for any torch optimizer: each tensor trains with ``lr`` times its factor.

    ``weight_decay`` (the value tuned at the base widths) goes to the tensors whose kind is in
    ``decay``: ``weight`` (weight matrices and convolutions, not embedding tables), ``embedding``,
    ``gain`` (norm gains), ``bias`` (biases and raw parameters); the others get 0. With
    ``weight_decay_policy="independent"`` (the default; mup's MuAdamW, CompleteP) each tensor's
    ``lr * weight_decay`` is what it is at the base widths: its decay is ``weight_decay`` times its
    lr factor at base over its lr factor here. ``"coupled"`` gives every decayed tensor
    ``weight_decay`` as it is (torch's plain AdamW), so ``lr * weight_decay`` shrinks where lr does.
    Tensors sharing a factor and a decay share a group; each group records its ``lr_factor`` and
    tensor ``names``. Raises :class:`~paramcalc.UsageError` when a tensor is missing or misshapen,
    or a needed forward multiplier was not installed (call :func:`apply` first).
    """
    unknown = set(decay) - {"weight", "embedding", "gain", "bias"}
    if unknown or weight_decay_policy not in ("independent", "coupled"):
        raise UsageError(f"decay must name tensor kinds among weight, embedding, gain, bias (got "
                         f"{sorted(decay)}) and weight_decay_policy be independent or coupled (got "
                         f"{weight_decay_policy!r})", source="param_groups")
    factors = decay_factors(d, widths) if weight_decay_policy == "independent" else None
    out: dict[tuple[float, float], dict[str, Any]] = {}
    for group in _call(d, "param_groups", model, lr, widths):
        for param, name in zip(group["params"], group["names"]):
            wd = 0.0
            if _decay_kind(d, name) in decay:
                wd = weight_decay * (factors[name] if factors else 1.0)
            g = out.setdefault((group["lr_factor"], wd), {**group, "params": [], "names": [],
                                                          "weight_decay": wd})
            g["params"].append(param)
            g["names"].append(name)
    return list(out.values())


def decay_factors(d: Any, widths: Mapping[str, int] | None = None) -> dict[str, float]:
    """Per tensor, the factor on weight decay that keeps ``lr * weight_decay`` at its base value
    (the independent policy): lr factor at the spec's base widths over lr factor at ``widths``.
    Both numbers are the derivation's (:meth:`Derivation.evaluate`)."""
    base, here = d.evaluate(), d.evaluate(widths)
    return {name: (base[name]["lr"] / here[name]["lr"] if here[name]["lr"] else 1.0) for name in here}


def _decay_kind(d: Any, name: str) -> str:
    tensor = d[name].tensor
    if tensor.kind != "weight":
        return tensor.kind
    return "embedding" if d.spec.layer(tensor.layer).definition.reads_ids else "weight"
