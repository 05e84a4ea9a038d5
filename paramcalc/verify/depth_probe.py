"""Where ``verify --depths`` reads a model: the stream entering each measured block, where the blocks
end, a block run alone, and the block's matrices.

Two kinds of model: one paramcalc built (:class:`PlanProbe`: its plan names each residual step, its
pre-norm and its branch), and a factory's (``--model``, :class:`ListProbe`): the list of blocks that
the inferred spec folded into a repeat (:mod:`paramcalc.infer.depth`, e.g. GPT-2's
``transformer.h``), whose branches carry the branch multiplier as a forward hook
(:mod:`paramcalc.infer.branches`). A factory's block is hooked at its entry (with the arguments the
model passes it: attention mask, rotary embeddings) and at the last block's exit; run alone, it gets
the same arguments again, so "the block with the weights after the step, fed its input at init"
means the same for both kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from paramcalc.engine import Derivation

__all__ = ["ListProbe", "PlanProbe", "make_probe"]

#: Keyword arguments a block is not given again when run alone: a key/value cache would grow.
_CACHES = ("past_key_values", "past_key_value", "layer_past", "use_cache")


def make_probe(model: Any, d: Derivation, depth_width: str, at: Mapping[str, int], *, factory: bool) -> Any:
    """The probe for ``model``: :class:`ListProbe` for a factory's model, else :class:`PlanProbe`."""
    return (ListProbe if factory else PlanProbe)(model, d, depth_width, at)


class _Probe:
    """What both kinds share: the measured positions, each block's hidden matrices, their updates."""

    def __init__(self, model: Any, d: Derivation, depth_width: str, at: Mapping[str, int]) -> None:
        self.model, self.d = model, d
        self.depth_block = block = next(b for b in d.spec.depth_blocks if b.width == depth_width)
        count = at[depth_width]
        self.name = block.name
        self.blocks = {"first": 0, "middle": count // 2, "last": count - 1}
        inside = [t for t in d.spec.tensors
                  if block.holds(t.name) and t.kind == "weight" and t.role == "hidden"]
        self.by_block = {pos: [t.name for t in inside if block.index(t.name) == k]
                         for pos, k in self.blocks.items()}

    def label(self, pos: str) -> str:
        return f"{self.name}[{pos}]"

    def param(self, name: str) -> torch.Tensor:
        return self.model.get_parameter(name)

    def update_norm(self, name: str, before: torch.Tensor, multiplier: float) -> float:
        """``||multiplier * (W - W_before)||_*``: the effective matrix's change."""
        change = (self.param(name).detach() - before).double() * multiplier
        return float(torch.linalg.matrix_norm(change, ord=2))

    def matrices(self) -> dict[str, torch.Tensor]:
        return {n: self.param(n).detach().clone() for names in self.by_block.values() for n in names}

    def _run(self, x: Any, hooks: list[Any]) -> Any:
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            for h in hooks:
                h.remove()


class PlanProbe(_Probe):
    """A model :func:`paramcalc.models.build_model` built: blocks are the plan's residual steps."""

    def __init__(self, model: Any, d: Derivation, depth_width: str, at: Mapping[str, int]) -> None:
        super().__init__(model, d, depth_width, at)
        block = self.depth_block
        steps = list(model._plan)
        self.steps = {k: [s for s in steps if s.op == "residual" and block.holds(s.layer)
                          and block.index(s.layer) == k] for k in set(self.blocks.values())}
        last = max(i for i, s in enumerate(steps) if s.op == "residual")
        self.after = steps[last + 1].layer if last + 1 < len(steps) else None
        self.scale = model.residual_scales.get(f"{block.name}.residual", 1.0)

    def forward(self, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """The stream entering each measured block, and where the blocks end."""
        seen: dict[int, torch.Tensor] = {}
        hooks = []
        for k, steps in self.steps.items():
            first = steps[0].norm or steps[0].layer
            hooks.append(self.model.get_submodule(first).register_forward_pre_hook(
                lambda _m, args, k=k: seen.setdefault(k, args[0].detach().clone())))
        end: list[torch.Tensor] = []
        if self.after is not None:
            hooks.append(self.model.get_submodule(self.after).register_forward_pre_hook(
                lambda _m, args: end.append(args[0].detach().clone())))
        out = self._run(x, hooks)
        return seen, end[0] if end else out.detach()

    def block(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``k`` applied alone to the stream ``x``, as the model applies it."""
        with torch.no_grad():
            for step in self.steps[k]:
                h = self.model.get_submodule(step.norm)(x) if step.norm else x
                x = x + self.scale * self.model.get_submodule(step.layer)(h)
        return x


class ListProbe(_Probe):
    """A factory's model: the blocks are the children of the list the repeat was folded from."""

    def __init__(self, model: Any, d: Derivation, depth_width: str, at: Mapping[str, int]) -> None:
        super().__init__(model, d, depth_width, at)
        self.children = list(model.get_submodule(self.name).children())
        if len(self.children) != at[depth_width]:
            raise ValueError(f"{self.name} has {len(self.children)} blocks at {depth_width} = "
                             f"{at[depth_width]}")
        config = getattr(model, "config", None)
        if getattr(config, "use_cache", False):  # a cache passed to every block would grow when replayed
            config.use_cache = False
        #: Block k -> (whether its stream came as ``hidden_states=``, its other arguments) at init.
        self.calls: dict[int, tuple[bool, tuple, dict[str, Any]]] = {}

    def forward(self, x: Any) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """The stream entering each measured block, and the last block's output."""
        seen: dict[int, torch.Tensor] = {}

        def enter(_m: Any, args: tuple, kwargs: dict[str, Any], k: int) -> None:
            keyword = not args
            stream = kwargs["hidden_states"] if keyword else args[0]
            seen.setdefault(k, stream.detach().clone())
            rest = {n: v for n, v in kwargs.items() if n not in _CACHES and n != "hidden_states"}
            self.calls.setdefault(k, (keyword, tuple(args[1:]), rest))

        hooks = [self.children[k].register_forward_pre_hook(
            lambda m, a, kw, k=k: enter(m, a, kw, k), with_kwargs=True) for k in set(self.blocks.values())]
        end: list[torch.Tensor] = []
        hooks.append(self.children[-1].register_forward_hook(
            lambda _m, _a, out: end.append(_first(out).detach().clone())))
        self._run(x, hooks)
        return seen, end[0]

    def block(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``k`` alone on the stream ``x``, with the arguments the model gave it at init."""
        keyword, args, kwargs = self.calls[k]
        block = self.children[k]
        with torch.no_grad():
            out = block(hidden_states=x, **kwargs) if keyword else block(x, *args, **kwargs)
        return _first(out)


def _first(output: Any) -> torch.Tensor:
    """A block's stream out of what it returns (a tensor, or a tuple whose first item is one)."""
    return output[0] if isinstance(output, (tuple, list)) else output
