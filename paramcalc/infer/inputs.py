"""What a user's model takes and gives: an example input read off its spec, its output as a tensor.

Models take token ids (their first layer is an embedding), images (a convolution) or vectors (a
linear layer), and give a tensor, a tuple whose first item is the prediction, or an object with
``.logits`` (Hugging Face's ``ModelOutput``). :func:`example_input` draws a batch of the first kind
the spec's first input layer reads; :func:`output_tensor` finds the prediction in the second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paramcalc.errors import FactoryError, Problem

__all__ = ["example_input", "input_layer", "output_tensor"]

#: Side of the images drawn for a convolutional model whose config does not give ``image_size``.
DEFAULT_IMAGE = 32


def output_tensor(output: Any) -> Any:
    """The prediction in a model's output: the tensor itself, ``.logits``, or a tuple's first item."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise FactoryError([Problem("model output", (
        f"the model returned {type(output).__name__}; expected a tensor, a tuple whose first item is "
        "one, or an object with .logits (give --data a function returning batches your model takes)"))],
        source="--model")


def input_layer(spec: Any) -> Any:
    """The first layer that reads the model's input: an embedding, a convolution or a linear layer
    (raw parameters such as a class token have a constant input and are skipped)."""
    for layer in spec.layers:
        if layer.kind in ("embedding", "conv", "linear") and "block" not in layer.attrs:
            return layer
    raise FactoryError([Problem("layers", "no embedding, convolution or linear layer reads the input; "
                                          "give --data a function returning batches")], source=spec.source)


def example_input(spec: Any, widths: Mapping[str, int], model: Any, *, batch: int, seq: int = 8,
                  generator: Any = None) -> Any:
    """A batch the model takes: token ids ``(batch, seq)``, images ``(batch, channels, side, ...)`` with
    ``side`` from ``model.config.image_size`` (else 32), or vectors ``(batch, fan_in)``."""
    import sympy
    import torch

    layer = input_layer(spec)
    subs = {spec.widths[k].symbol: v for k, v in widths.items()}

    def dim(key: str) -> int:
        return int(sympy.sympify(layer.attrs[key]).xreplace(subs))

    if layer.kind == "embedding" or layer.attrs.get("input") == "sparse":
        return torch.randint(dim("fan_in"), (batch, seq), generator=generator)
    if layer.kind == "conv":
        ndim = len(layer.attrs["kernel"])
        side = getattr(getattr(model, "config", None), "image_size", DEFAULT_IMAGE)
        side = side if isinstance(side, int) else DEFAULT_IMAGE
        return torch.randn((batch, dim("in_channels"), *[side] * ndim), generator=generator)
    return torch.randn((batch, dim("fan_in")), generator=generator)
