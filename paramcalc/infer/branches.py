"""Residual branches of blocks that paramcalc did not build: where the branch multiplier goes.

A depth that scales multiplies each block's branches by ``r = (L / L_base)^-alpha``
(:mod:`paramcalc.engine.depth`): ``x = x + r * branch(x)``. In a Hugging Face pre-norm block the
branches are child modules whose output is added to the stream and used nowhere else, so scaling
their output by a forward hook is the one-line change ``x = x + r * attn(ln_1(x))`` without editing
the model's code. :data:`BRANCHES` lists the blocks whose forward paramcalc has read (transformers
5.x): GPT-2's ``GPT2Block`` (``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``; ``crossattention`` where
the config adds it), Llama's ``LlamaDecoderLayer`` (``self_attn``, ``mlp``) and ViT's ``ViTLayer``
(``attention``, ``mlp``). An attention module returns ``(output, weights)``: the hook scales the
output only. Any other block is left to its user (the emitted ``residual_scales(widths)``), and
:func:`paramcalc.torch.apply` says so.

The hook reads the scale from the module (``_paramcalc_residual``), so applying again at another
depth replaces the scale instead of stacking hooks; it is a module-level function, so a model with
it still pickles.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["BRANCHES", "branch_scale", "install_branch_scales"]

#: Block class name -> the child modules that are its residual branches.
BRANCHES: dict[str, tuple[str, ...]] = {
    "GPT2Block": ("attn", "crossattention", "mlp"),
    "LlamaDecoderLayer": ("self_attn", "mlp"),
    "ViTLayer": ("attention", "mlp"),
}

_ATTR = "_paramcalc_residual"


def _scale_output(module: nn.Module, args: Any, output: Any) -> Any:
    scale = getattr(module, _ATTR, 1.0)
    if scale == 1.0:
        return None
    if isinstance(output, tuple):
        return (output[0] * scale, *output[1:])
    return output * scale


def branches(block: nn.Module) -> list[nn.Module] | None:
    """The branch modules of one block, None where its class is not in :data:`BRANCHES`."""
    names = BRANCHES.get(type(block).__name__)
    if names is None:
        return None
    return [m for m in (getattr(block, n, None) for n in names) if isinstance(m, nn.Module)]


def install_branch_scales(model: nn.Module, path: str, scale: float) -> bool:
    """Multiply every branch of every block in the list ``path`` of ``model`` by ``scale``; False
    (and nothing changed) where the list is missing or a block's class is not known."""
    try:
        blocks = model.get_submodule(path)
    except AttributeError:
        return False
    found = [branches(block) for block in blocks.children()]
    if not found or any(b is None for b in found):
        return False
    for block_branches in found:
        for module in block_branches or ():
            setattr(module, _ATTR, float(scale))
            if not any(hook is _scale_output for hook in module._forward_hooks.values()):
                module.register_forward_hook(_scale_output)
    return True


def branch_scale(model: nn.Module, path: str) -> list[float] | None:
    """The scale each block of the list ``path`` applies to its branches (1 where none is
    installed), None where its blocks are not known ones: what :func:`paramcalc.audit` reads."""
    try:
        blocks = model.get_submodule(path)
    except AttributeError:
        return None
    out = []
    for block in blocks.children():
        found = branches(block)
        if found is None:
            return None
        hooked = [getattr(m, _ATTR, 1.0) if any(h is _scale_output for h in m._forward_hooks.values())
                  else 1.0 for m in found]
        out.append(min(hooked, key=lambda s: abs(s - 1.0)) if hooked else 1.0)
    return out
