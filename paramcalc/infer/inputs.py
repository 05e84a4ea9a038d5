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

__all__ = ["example_input", "image_shape", "input_layer", "output_tensor"]

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


def image_shape(spec: Any, widths: Mapping[str, int], model: Any) -> tuple[int, ...] | None:
    """One image's shape ``(channels, side, ...)`` when the model's input layer is a convolution
    (``side`` from ``model.config.image_size``, else :data:`DEFAULT_IMAGE`); None otherwise."""
    import sympy

    layer = input_layer(spec)
    if layer.kind != "conv":
        return None
    subs = {spec.widths[k].symbol: v for k, v in widths.items()}
    channels = int(sympy.sympify(layer.attrs["in_channels"]).xreplace(subs))
    side = getattr(getattr(model, "config", None), "image_size", DEFAULT_IMAGE)
    side = side if isinstance(side, int) else DEFAULT_IMAGE
    return (channels, *[side] * len(layer.attrs["kernel"]))


def example_input(spec: Any, widths: Mapping[str, int], model: Any, *, batch: int, seq: int = 8,
                  generator: Any = None) -> Any:
    """A batch the model takes: token ids ``(batch, seq)``, images ``(batch, *image_shape(...))``, or
    vectors ``(batch, fan_in)``."""
    import sympy
    import torch

    layer = input_layer(spec)
    image = image_shape(spec, widths, model)
    if image is not None:
        return torch.randn((batch, *image), generator=generator)
    fan_in = int(sympy.sympify(layer.attrs["fan_in"]).xreplace(
        {spec.widths[k].symbol: v for k, v in widths.items()}))
    if layer.kind == "embedding" or layer.attrs.get("input") == "sparse":
        return torch.randint(fan_in, (batch, seq), generator=generator)
    return torch.randn((batch, fan_in), generator=generator)
