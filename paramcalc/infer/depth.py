"""Depth in an inferred spec: a list of blocks whose length is a scaling width.

A width that a factory reads as its number of blocks (``n_layers: {base: 4}`` for GPT-2's
``transformer.h``) does not change any tensor's shape when doubled: it changes which tensors
exist. :func:`block_list` finds the one ``nn.ModuleList`` (or ``nn.Sequential``) whose length is
that width (``L`` in the base build, ``2 L`` in the build with the width doubled, and no other
tensor gained or lost), and
:func:`fold_blocks` turns the base build's entries of its ``L`` blocks, which must be equal up to
their index, into one ``repeat:`` whose count is the width. The spec's depth then scales
(:mod:`paramcalc.engine.depth`): the derivation carries each block's depth factors and its branch
multiplier ``"<list>.residual"``, which :func:`paramcalc.torch.apply` installs on the blocks it
knows (:mod:`paramcalc.infer.branches`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from paramcalc.errors import Problem

__all__ = ["block_list", "fold_blocks"]


def block_list(base: nn.Module, doubled: nn.Module, count: int, width: str) -> str | Problem | None:
    """The path of the list of blocks that ``width`` counts, None when doubling it changes no tensor's
    existence (a dimension), or a :class:`Problem` when it changes them some other way."""
    names = {n for n, _ in base.named_parameters()}
    more = {n for n, _ in doubled.named_parameters()}
    if names == more:
        return None
    kinds = (nn.ModuleList, nn.Sequential)
    lists = [path for path, m in base.named_modules()
             if isinstance(m, kinds) and len(m) == count and path
             and isinstance(_get(doubled, path), kinds) and len(_get(doubled, path)) == 2 * count]
    found = [p for p in lists if all(n.startswith(f"{p}.") for n in names ^ more)]
    if len(found) != 1:
        return Problem(f"widths.{width}", (
            f"doubling {width} changes which tensors the model has, but not as one list of blocks of "
            f"length {width} (an nn.ModuleList or nn.Sequential of {count} blocks, {2 * count} with "
            f"{width} doubled) would; "
            "a depth must count one list of identical blocks, and a dimension must not add tensors"))
    return found[0]


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def fold_blocks(
    entries: list[dict[str, Any]], path: str, width: str, count: int
) -> list[dict[str, Any]] | Problem:
    """``entries`` with those of the blocks ``<path>.0 .. <path>.<count-1>`` replaced by one
    ``repeat: width`` of block 0's entries (names relative to the block)."""
    blocks: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    where: list[int] = []
    for i, entry in enumerate(entries):
        index = _block_index(entry["name"], path)
        if index is not None:
            blocks[index].append(_relative(entry, f"{path}.{index}."))
            where.append(i)
    if not where or where != list(range(where[0], where[0] + len(where))):
        return Problem(path, "its blocks' tensors are not one run of the model's tensors")
    tied = [e["name"] for e in blocks[0] if "tie" in e]
    if tied:
        return Problem(f"{path}.0.{tied[0]}", "a weight tied inside a block of a depth that scales: "
                                              "paramcalc cannot repeat the tie")
    for i, block in enumerate(blocks[1:], start=1):
        if block != blocks[0]:
            return Problem(f"{path}.{i}", f"differs from {path}.0: a depth repeats one block, so every "
                                          "block must have the same layers and dimensions")
    folded = {"name": path, "repeat": width, "layers": blocks[0]}
    return entries[:where[0]] + [folded] + entries[where[-1] + 1:]


def _block_index(name: str, path: str) -> int | None:
    if not name.startswith(f"{path}."):
        return None
    head = name[len(path) + 1:].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _relative(entry: dict[str, Any], prefix: str) -> dict[str, Any]:
    name = entry["name"][len(prefix):]
    return {**entry, "name": name}
