"""Training data for the verifier: synthetic by default, or scikit-learn's digits.

The paper assumes dense inputs of norm ``sqrt(n_0)`` (every entry of size Theta(1), "standard for
image data", Sec. 1.1) and one-hot inputs for token ids (App. E). ``synthetic`` gives exactly that:
Gaussian rows rescaled to norm ``sqrt(n_0)``, or uniform token ids. Targets are random: ``+-1``
per output for the mean squared error (the paper's Fig. 2 trains on ``+-1`` targets), uniform
classes for cross-entropy. A batch is drawn once per seed and reused at every step (full-batch
gradient descent, as in Fig. 2) and at every width, so widths differ only in the model.

Sequence models (a transformer reads token ids ``(B, T)``) get synthetic sequences of uniform token
ids; with cross-entropy, when the model's output is the vocabulary, the targets are the next
tokens (``x = s[:, :T]``, ``y = s[:, 1:]`` of one draw ``s`` of ``T + 1`` ids): a language model's
loss. Uniform ids make next-token prediction unlearnable, which does not matter for a few steps:
what is measured is how the first updates scale. With the output centered (``f - f_0``, see
:class:`~paramcalc.verify.measure.RunSettings`) the logits are 0 at init at every width, so the
first step's loss gradient at the output is exactly ``(1/V - e_y) / (B T)`` per position, the same
at every width, as the centering makes it for the MSE of a chain. (MSE on all ``V`` centered logits
would be width-independent too, but its gradient is a dense random sign pattern over the whole
vocabulary, where cross-entropy's lies on the few target tokens, as in real training.)

Image models (the model's input layer is a convolution) get Gaussian images ``(B, C, H, W)`` of
entries of size Theta(1), the paper's dense input at every pixel, with the targets of dense inputs.
Anything else comes from a ``--data pkg.mod:function`` hook: ``function(batch, seed)`` returns
``(inputs, targets)``, the inputs as the model takes them and the targets as the loss takes them
(class ids for cross-entropy, the output's shape for the MSE); it is called once per seed, like the
synthetic batches.

``digits`` is scikit-learn's 8x8 digits (1797 images, 64 features, shipped inside the package, no
download): features standardised, rows rescaled to norm ``sqrt(64)``; one output keeps the first two
classes with ``+-1`` targets (the paper's two-class setup); ``k`` outputs keep classes ``0..k-1``.
An image model (its input layer a 2-D convolution) gets the same standardised digits as images
``(B, C, 8, 8)``, the gray level repeated over its ``C`` input channels: a small real image task.

``chars`` is character-level language modelling on real English prose that ships with every Python:
the reference manual's topics in the standard library's ``pydoc_data.topics`` (about 465,000
characters). Its alphabet is :data:`CHARS`, printable ASCII and the newline (96 symbols, token id
``i`` the ``i``-th of them; the 0.1% of other characters are dropped), so the model's vocabulary
must hold at least 96 tokens. A seed's batch is ``B`` windows of ``seq + 1`` characters at random
offsets, ``x`` the first ``seq`` and ``y`` the next tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from paramcalc.errors import FactoryError, Problem, UsageError

__all__ = ["Batch", "CHARS", "DATASETS", "LOSSES", "char_ids", "char_text", "hook_batch", "is_hook",
           "make_batch"]

DATASETS = ("synthetic", "digits", "chars")
#: The ``chars`` alphabet: token id ``i`` is ``CHARS[i]``.
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
LOSSES = ("mse", "ce")


@dataclass(frozen=True)
class Batch:
    """Inputs ``x`` (float ``(B, n_0)`` or long token ids ``(B,)``) and targets ``y``."""

    x: torch.Tensor
    y: torch.Tensor
    loss: str

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """On ``device``; float inputs and targets in ``dtype`` if given (token ids stay long)."""
        x, y = self.x.to(device), self.y.to(device)
        if dtype is not None:
            x = x.to(dtype) if torch.is_floating_point(x) else x
            y = y.to(dtype) if torch.is_floating_point(y) else y
        return Batch(x, y, self.loss)

    def split(self, size: int) -> list[Batch]:
        """Consecutive batches of ``size`` examples."""
        return [Batch(x, y, self.loss) for x, y in zip(self.x.split(size), self.y.split(size))]

    @property
    def tokens(self) -> int:
        """Examples the loss averages over: sequence positions count as examples."""
        return self.y.numel() if self.loss == "ce" else self.y[..., 0].numel()

    def loss_value(self, output: torch.Tensor) -> torch.Tensor:
        """Mean squared error (mean over batch and outputs) or softmax cross-entropy."""
        import torch.nn.functional as F

        if self.loss == "mse":
            return F.mse_loss(output, self.y)
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), self.y.reshape(-1))


#: Where a bad data option comes from, in errors: the data options are command-line options.
_SOURCE = "command line"


def _check_options(data: str, loss: str, batch: int, n_out: int) -> None:
    if data not in DATASETS:
        raise UsageError([Problem("--data", f"expected one of {', '.join(DATASETS)} or pkg.mod:function, "
                                            f"got {data!r}")], source=_SOURCE)
    if loss not in LOSSES:
        raise UsageError([Problem("--loss", f"expected one of {', '.join(LOSSES)}, got {loss!r}")],
                        source=_SOURCE)
    if batch < 1:
        raise UsageError([Problem("--batch", f"expected a positive batch size, got {batch}")], source=_SOURCE)
    if loss == "ce" and n_out < 2:
        raise UsageError([Problem("--loss", f"cross-entropy needs at least 2 outputs; the model has "
                                            f"{n_out}")], source=_SOURCE)


def make_batch(
    *,
    data: str,
    loss: str,
    batch: int,
    n_in: int | tuple[int, ...],
    n_out: int,
    sparse: bool,
    seed: int,
    seq: int | None = None,
) -> Batch:
    """One fixed batch for a seed; ``n_in``/``n_out`` are the model's input and output widths
    (``n_in`` a tuple: one image's shape ``(channels, side, ...)``, for Gaussian images).

    ``seq`` asks for sequences of token ids ``(B, seq)`` (a transformer's input) instead of one
    input per example; targets then have a ``seq`` axis too: the next tokens for cross-entropy when
    ``n_in == n_out`` (a language model), uniform classes otherwise.
    """
    _check_options(data, loss, batch, n_out)
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    shape: tuple[int, ...] = (batch,) if seq is None else (batch, seq)
    if seq is not None:
        x, labels = _sequences(data, n_in, n_out, batch, seq, sparse, g)
    elif data == "chars":
        raise UsageError([Problem("--data", "chars is for language models (token ids in, the vocabulary "
                                            "out); this model is not one")], source=_SOURCE)
    elif isinstance(n_in, tuple) and data == "digits":
        x, labels = _digit_images(n_in, n_out, batch, g)
    elif isinstance(n_in, tuple):
        if data != "synthetic":
            raise UsageError([Problem("--data", f"the model takes images {n_in}, not {data}; give --data "
                                                "pkg.mod:function returning (inputs, targets)")],
                             source=_SOURCE)
        x = torch.randn(batch, *n_in, generator=g)
        labels = torch.randint(max(n_out, 2), (batch,), generator=g)
    elif data == "digits":
        x, labels = _digits(n_in, n_out, batch, sparse, g)
    else:
        if sparse:
            x = torch.randint(n_in, (batch,), generator=g)
        else:
            x = torch.randn(batch, n_in, generator=g)
            x = x * (n_in**0.5 / x.norm(dim=1, keepdim=True))
        labels = torch.randint(max(n_out, 2), (batch,), generator=g)
    if loss == "ce":
        return Batch(x, labels, loss)
    if data == "synthetic":
        y = torch.randint(2, (*shape, n_out), generator=g).float() * 2 - 1
    elif n_out == 1:
        y = (labels.float() * 2 - 1).unsqueeze(1)
    else:
        y = torch.nn.functional.one_hot(labels, n_out).float() * 2 - 1
    return Batch(x, y, loss)


def _sequences(
    data: str, n_in: Any, n_out: int, batch: int, seq: int, sparse: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(batch, seq)`` and their targets: the next tokens for a language model (``n_in ==
    n_out``), uniform classes otherwise."""
    if data == "digits" or not sparse or isinstance(n_in, tuple):
        raise UsageError([Problem("--data", "sequence models take token ids: synthetic or chars")],
                         source=_SOURCE)
    tokens = (_chars(n_in, batch, seq, g) if data == "chars"
              else torch.randint(n_in, (batch, seq + 1), generator=g))
    if n_in == n_out:
        return tokens[:, :-1], tokens[:, 1:]
    return tokens[:, :-1], torch.randint(max(n_out, 2), (batch, seq), generator=g)


def _digits(
    n_in: int, n_out: int, batch: int, sparse: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if sparse or n_in != 64:
        raise UsageError([Problem("--data", f"digits has 64 dense features; the spec's first layer takes "
                                           f"{'token ids' if sparse else n_in}")], source=_SOURCE)
    return _standard_digits(n_out, batch, g)


def _digit_images(
    image: tuple[int, ...], n_out: int, batch: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as ``(B, C, 8, 8)`` images for a 2-D convolution with ``C`` input channels."""
    if len(image) != 3:
        raise UsageError([Problem("--data", f"digits are 2-D images; the model's input convolution is "
                                            f"{len(image) - 1}-D")], source=_SOURCE)
    x, labels = _standard_digits(n_out, batch, g)
    return x.reshape(batch, 1, 8, 8).expand(batch, image[0], 8, 8).contiguous(), labels


def _standard_digits(n_out: int, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    classes = 2 if n_out == 1 else n_out
    if classes > 10:
        raise UsageError([Problem("--data", f"digits has 10 classes; the model has {n_out} outputs")],
                        source=_SOURCE)
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dev dependency
        raise UsageError([Problem("--data", "digits needs scikit-learn (pip install scikit-learn)")],
                        source=_SOURCE) from None
    images, labels = load_digits(return_X_y=True)
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    keep = y < classes
    x, y = x[keep], y[keep]
    if batch > len(y):
        raise UsageError([Problem("--batch", f"digits has {len(y)} images of classes 0..{classes - 1}; "
                                            f"got a batch of {batch}")], source=_SOURCE)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    x = x * (64**0.5 / x.norm(dim=1, keepdim=True).clamp_min(1e-6))
    order = torch.randperm(len(y), generator=g)[:batch]
    return x[order], y[order]


def _chars(vocab: int, batch: int, seq: int, g: torch.Generator) -> torch.Tensor:
    """``batch`` windows of ``seq + 1`` token ids of :func:`char_text`."""
    if vocab < len(CHARS):
        raise UsageError([Problem("--data", f"chars has {len(CHARS)} symbols (printable ASCII and the "
                                            f"newline); the model's vocabulary holds {vocab}")],
                         source=_SOURCE)
    ids = char_ids()
    if seq + 1 > len(ids):
        raise UsageError([Problem("--seq", f"at most {len(ids) - 1} characters")], source=_SOURCE)
    starts = torch.randint(len(ids) - seq, (batch,), generator=g)
    return ids[starts[:, None] + torch.arange(seq + 1)]


def char_text() -> str:
    """The ``chars`` text: Python's reference-manual topics (``pydoc_data.topics``), in key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


@functools.lru_cache(maxsize=1)
def char_ids() -> torch.Tensor:
    """The ``chars`` text as token ids (characters outside :data:`CHARS` dropped)."""
    index = {c: i for i, c in enumerate(CHARS)}
    return torch.tensor([index[c] for c in char_text() if c in index], dtype=torch.long)


def is_hook(data: str) -> bool:
    """Whether ``--data`` names a function (``pkg.mod:function``) rather than a data set."""
    return ":" in data


def hook_batch(hook: Any, label: str, *, loss: str, batch: int, seed: int) -> Batch:
    """The batch ``hook(batch, seed)`` returns, checked: two tensors, integer class ids for
    cross-entropy, floats for the MSE. Its errors are one paragraph naming the hook."""
    def bad(what: str) -> FactoryError:
        return FactoryError([Problem("--data", f"{label}({batch}, {seed}) {what}")], source="command line")

    try:
        out = hook(batch, seed)
    except Exception as exc:  # noqa: BLE001 - user code
        raise bad(f"raised {type(exc).__name__}: {exc}") from None
    pair = isinstance(out, (tuple, list)) and len(out) == 2
    if not (pair and all(isinstance(t, torch.Tensor) for t in out)):
        raise bad(f"returned {type(out).__name__}; expected a tuple (inputs, targets) of two tensors")
    x, y = out
    if loss == "ce" and torch.is_floating_point(y):
        raise bad("returned float targets; cross-entropy takes class ids (or give --loss mse)")
    if loss == "mse" and not torch.is_floating_point(y):
        raise bad("returned integer targets; the MSE takes floats of the output's shape (or give --loss ce)")
    return Batch(x.detach(), y.detach(), loss)
