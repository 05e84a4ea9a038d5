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
included. :func:`param_groups` gives each tensor ``weight_decay`` times its derived factor: 0 on
the kinds the derivation does not decay (gains, biases and embedding tables by default) and, under
the default "independent" policy, a factor that keeps ``lr * weight_decay`` at its value at the
base widths (mup's MuAdamW multiplies weight decay by the width multiplier it divides the learning
rate by; Wortsman et al. 2023). The factors are derived in :mod:`paramcalc.engine.factors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from paramcalc.errors import UsageError

__all__ = ["apply", "attention_modules", "emitted", "install_attention_scales", "install_residual_scales",
           "make_optimizers", "param_groups", "set_attention_scales", "set_residual_scales"]

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


def _call(d: Any, fn: str, *args: Any, **kwargs: Any) -> Any:
    """``fn`` of the emitted code, for the depth the call's widths set (where depth scales)."""
    widths = next((a for a in args if isinstance(a, Mapping)), None)
    if widths and d.spec.depth_blocks:
        d = d.at_depth(widths)
    try:
        return emitted(d)[fn](*args, **kwargs)
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
    set_residual_scales(model, d, widths)
    return model


def set_residual_scales(model: nn.Module, d: Any, widths: Mapping[str, int] | None = None) -> None:
    """Set the branch multipliers of a residual network whose depth scales: a model paramcalc built,
    or one whose blocks :mod:`paramcalc.infer.branches` knows (GPT-2, Llama, ViT, inferred with their
    block count scaling); a model that has no place for them is an error: its blocks must compute
    ``x = x + scale * block(x)`` with ``scale = residual_scales(widths)["<repeat>.residual"]``."""
    scales = _call(d, "residual_scales", widths)
    missing = install_residual_scales(model, scales)
    if missing:
        raise UsageError(
            f"the depth scales: each block's branch must be multiplied by {', '.join(missing)} "
            f"({', '.join(f'{scales[k]:g}' for k in missing)} here), and paramcalc cannot see this model's "
            "residual connections; in your block, write `x = x + scale * branch(x)` with "
            "scale = residual_scales(widths)[...] from the emitted code", source=d.spec.source)


def install_residual_scales(model: nn.Module, scales: Mapping[str, float]) -> list[str]:
    """Install the branch multipliers ``scales`` (the emitted ``residual_scales(widths)``) where
    ``model`` has a place for them; return the keys, of a scale other than 1, it has none for. A model
    paramcalc built holds its scales; blocks :mod:`paramcalc.infer.branches` knows (Hugging Face's)
    get a forward hook on their branches."""
    from paramcalc.infer.branches import install_branch_scales
    from paramcalc.models import set_residual_scales as install

    return [k for k in install(model, scales)
            if not install_branch_scales(model, k.removesuffix(".residual"), scales[k]) and scales[k] != 1]


def param_groups(
    model: nn.Module, d: Any, lr: float, widths: Mapping[str, int] | None = None, *,
    weight_decay: float = 0.0, eps: float = 1e-8, adam_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for any torch optimizer: each tensor trains with ``lr`` times its factor,
    decays with ``weight_decay`` times its factor and (under Adam and AdamW) uses ``eps`` times its
    factor; ``weight_decay`` and ``eps`` are the values tuned at the base widths. Which tensors decay
    and how (the policy) is the derivation's: ``paramcalc.derive(..., weight_decay="independent" |
    "coupled", decay=("weight",))``. Every group sets its own ``weight_decay``, overriding the
    optimizer's default. Under Muon the tensors AdamW trains take ``adam_lr`` (default ``lr``).
    Raises :class:`~paramcalc.UsageError` when a tensor is missing or misshapen, or a needed forward
    multiplier was not installed (call :func:`apply` first).
    """
    return _call(d, "param_groups", model, lr, widths, weight_decay=weight_decay, eps=eps, adam_lr=adam_lr)


def make_optimizers(
    model: nn.Module, d: Any, lr: float, adam_lr: float | None = None,
    widths: Mapping[str, int] | None = None, *, weight_decay: float = 0.0, eps: float = 1e-8,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """The torch optimizers of ``d`` over :func:`param_groups`: one for a single optimizer; under
    Muon, ``torch.optim.Muon`` for the hidden matrices and ``AdamW`` (at ``adam_lr``, default ``lr``)
    for the rest. The result is a tuple of them with ``step()`` and ``zero_grad()`` acting on all.
    ``options``: more constructor arguments per optimizer name (``{"muon": {"momentum": 0.9}}``)."""
    return _call(d, "make_optimizers", model, lr, adam_lr, widths, weight_decay=weight_decay, eps=eps,
                 options=options)
