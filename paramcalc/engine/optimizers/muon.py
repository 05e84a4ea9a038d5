"""Muon's update-size law (Keller Jordan 2024; ``torch.optim.Muon``, ``optax.contrib.muon``).

Muon orthogonalises each matrix's (Nesterov) momentum with a few Newton-Schulz iterations:
``O ~ U V^T`` for the momentum's SVD ``U S V^T``, so every nonzero singular value of ``O`` is about 1
(the quintic iteration with torch's default coefficients ``(3.4445, -4.775, 2.0315)`` leaves them in
roughly ``[0.7, 1.2]``) and ``||O||_* ~ 1`` whatever the gradient's scale or rank. The step is
``dW = -lr * s(A, B) * O`` with torch's shape factor (``torch.optim._muon._adjust_lr``, reading the
stored ``param.shape[:2] = (A, B)``):

- ``adjust_lr_fn="original"`` (Keller Jordan's): ``s = sqrt(max(1, A / B))``;
- ``adjust_lr_fn="match_rms_adamw"`` (Moonshot AI, Liu et al. 2025, "Muon is Scalable for LLM
  Training"): ``s = 0.2 * sqrt(max(A, B))``, which gives the update AdamW's typical entry RMS.

So ``||dW||_* = lr * s(A, B)`` exactly from the definition, and Condition 1's target
``sqrt(fan_out / fan_in)`` takes ``lr = sqrt(fan_out / fan_in) / s(A, B)`` for any shape. For a
``(fan_out, fan_in)`` Linear weight:

- ``original``: ``lr = min(1, sqrt(fan_out / fan_in))``: 1 for square and widening matrices, with no
  width scaling at all; a 4x MLP's up-projection (``4n x n``) gets 1 and its down-projection
  (``n x 4n``) gets ``1/2``, a factor 2 apart;
- ``match_rms_adamw``: ``lr = 5 sqrt(fan_out / fan_in) / sqrt(max(fan_out, fan_in))``, which
  shrinks like ``n^-1/2``: ``5/sqrt(n)`` for a square matrix, ``5/sqrt(n)`` for the up- and
  ``1.25/sqrt(n)`` for the down-projection, a factor 4 apart. Without that ``n^-1/2`` the hidden
  updates grow like ``n^1/2``.

torch reads the *stored* shape: a weight stored ``(fan_in, fan_out)`` (Hugging Face ``Conv1D``)
gets ``s`` of the transposed ratio, and the factor here follows it (the orthogonalised update is
the same either way). Muon's update ignores the gradient's scale: abc-symmetry power 1.

Muon trains only matrices inside the network (role ``hidden``, two dimensions: ``torch.optim.Muon``
refuses any other); embeddings, the readout, input layers, gains, biases and convolution kernels
go to AdamW with AdamW's factors (:meth:`Muon.assign`), as Keller Jordan's and Moonshot's recipes
do. Its weight decay is decoupled, ``W -> (1 - lr * wd) W`` with the group's unadjusted ``lr``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from paramcalc.engine.optimizers.adamw import OPTIMIZER as ADAMW
from paramcalc.engine.optimizers.base import Optimizer, stored_shape

__all__ = ["ADJUSTS", "OPTIMIZER", "Muon"]

#: torch's ``adjust_lr_fn`` values (``None`` means ``"original"``).
ADJUSTS = ("original", "match_rms_adamw")


class Muon(Optimizer):
    name = "muon"
    title = "Muon"
    symmetry_power = 1
    torch_class = "Muon"
    optax_constructor = "optax.contrib.muon"
    state_tensors = 1
    probe_lr = 2e-2
    decoupled_decay = True
    reads_layout = True
    #: The optimizer that trains every tensor Muon does not.
    partner: ClassVar[Optimizer] = ADAMW

    def __init__(self, adjust: str = "original") -> None:
        if adjust not in ADJUSTS:
            raise ValueError(f"muon_adjust must be one of {', '.join(ADJUSTS)}; got {adjust!r}")
        self.adjust = adjust

    def with_adjust(self, adjust: str | None) -> Muon:
        """This law with torch's ``adjust_lr_fn`` ``adjust`` (None: ``"original"``)."""
        return Muon(adjust or "original")

    def shape_factor(self, rows: Any, cols: Any) -> Any:
        """torch's ``_adjust_lr`` ratio ``s(A, B)`` for a stored ``(rows, cols)`` matrix."""
        import sympy

        if self.adjust == "original":
            ratio = sympy.sympify(rows) / cols
            return sympy.sqrt(max(ratio, 1) if ratio.is_number else sympy.Max(1, ratio, evaluate=False))
        return sympy.Rational(1, 5) * sympy.sqrt(sympy.Max(rows, cols))

    def update_norm(self, lr: Any, grad_norm: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        return lr * self.shape_factor(*stored_shape(stored, d_in, fan_out))

    def lr_for_update(self, target: Any, d_in: Any, fan_out: Any, stored: Any = None) -> Any:
        return target / self.shape_factor(*stored_shape(stored, d_in, fan_out))

    def assign(self, tensor: Any) -> Optimizer:
        """Muon for a hidden weight matrix, AdamW for every other tensor."""
        hidden_matrix = tensor.kind == "weight" and tensor.role == "hidden" and len(tensor.shape) == 2
        return self if hidden_matrix else self.partner

    @property
    def trained_with(self) -> tuple[Optimizer, ...]:
        return (self, self.partner)

    def torch_options(self) -> dict[str, Any]:
        return {"adjust_lr_fn": self.adjust}

    def __repr__(self) -> str:
        return f"<optimizer 'muon' (adjust_lr_fn={self.adjust!r})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Muon) and other.adjust == self.adjust

    def __hash__(self) -> int:
        return hash(("muon", self.adjust))


OPTIMIZER = Muon()
