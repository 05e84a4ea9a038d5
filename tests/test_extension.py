"""An extension from outside the package: a toy layer kind, registered here, works in every stage.

The kind is a *scaled identity*: ``y = g * x`` coordinate by coordinate, with one vector parameter
``g`` (initialised to ones, like a norm's gain, but without normalising). Nothing inside
``paramcalc/`` knows about it; registering it is all it takes for the spec, the derivation, every
emitter, the table, the torch model and the first-step calculus to handle it.
"""

from __future__ import annotations

from typing import Literal

import pytest
import sympy
import torch
from torch import nn

import paramcalc
from paramcalc import registry
from paramcalc.emit import EMITTERS, emit
from paramcalc.engine.calculus import scaling
from paramcalc.kinds import LayerKind, register_kind, unregister_kind
from paramcalc.kinds.fields import Dim, Name, SpecEntry
from paramcalc.models import build_model
from tests.conftest import holds


class ScaledIdentityLayer(SpecEntry):
    kind: Literal["scaled_identity"]
    name: Name
    dim: Dim


class Scale(nn.Module):
    def __init__(self, dim: int, **factory: object) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class ScaledIdentity(LayerKind):
    name = "scaled_identity"
    schema = ScaledIdentityLayer
    chain_role = "gain"
    flax_leaves = {"weight": "scale"}

    def expand(self, builder, name, entry, path):
        dim = builder.dim(entry.dim, f"{path}.dim")
        if dim is None:
            return
        params = {"weight": builder.vector(name, "weight", "gain", dim, "ones", path).name}
        builder.add_layer(name, self.name, path, params, {"dim": dim})

    def width_in(self, layer):
        return layer.attrs["dim"]

    def torch_module(self, layer, dims, factory, activation):
        return Scale(dims(layer.attrs["dim"], layer.path), **factory)

    def calculus_scale(self, layer, folded, norm_in):
        return folded[layer.params["weight"]].init_mean


SPEC = {
    "name": "toy",
    "widths": {"n0": 32, "d": {"base": 64}, "n_out": 1},
    "layers": [
        {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
        {"kind": "scaled_identity", "name": "scale", "dim": "d"},
        {"name": "fc2", "fan_in": "d", "fan_out": "d"},
        {"name": "head", "fan_in": "d", "fan_out": "n_out"},
    ],
}


@pytest.fixture
def toy_kind():
    kind = register_kind(ScaledIdentity())
    yield kind
    unregister_kind(kind.name)


def test_unknown_until_registered():
    with pytest.raises(paramcalc.SpecError, match="unknown layer kind 'scaled_identity'"):
        paramcalc.load_spec(SPEC)


def test_spec_and_derivation(toy_kind):
    spec = paramcalc.load_spec(SPEC)
    t = spec.tensor("scale.weight")
    assert (t.role, t.layout, t.d_in, t.init) == ("input", "vector", 1, "ones")
    for rule in list(registry.PARAMETRIZATIONS):
        d = paramcalc.derive(spec, rule, "adam")
        assert d["scale.weight"].init_mean == 1 and d["scale.weight"].init_std == 0
    # Adam, spectral: a vector of d_in = 1 gets lr 1/d_in = 1 (Condition 1 for a d x 1 matrix).
    assert paramcalc.derive(spec, "spectral", "adam")["scale.weight"].lr == 1


def test_every_emitter_and_the_table(toy_kind):
    d = paramcalc.derive(SPEC, "mup", "adam")
    for target in EMITTERS:
        text = emit(d, target, {"d": 128})
        assert "scale" in text, target
    from paramcalc.emit.tables import render_table

    assert "scale.weight" in render_table(paramcalc.load_spec(SPEC), "markdown")


def test_torch_model_runs_the_emitted_code(toy_kind):
    d = paramcalc.derive(SPEC, "mup", "sgd")
    model = build_model(d.spec, {"d": 128})
    assert isinstance(model.get_submodule("scale"), Scale)
    namespace: dict = {}
    exec(compile(emit(d, "torch"), "<emitted>", "exec"), namespace)
    namespace["init_parameters"](model, {"d": 128})
    assert torch.equal(model.get_submodule("scale").weight.detach(), torch.ones(128))
    groups = namespace["param_groups"](model, 0.1, {"d": 128})
    lrs = {p.shape: g["lr"] for g in groups for p in g["params"]}
    assert lrs[(128,)] == pytest.approx(0.1 * 128 / 64)  # muP SGD: an input-role vector, m_out
    y = model(torch.randn(4, 32))
    assert y.shape == (4, 1) and torch.isfinite(y).all()


def test_calculus_steps_through_the_new_kind(toy_kind):
    s = scaling(paramcalc.derive(SPEC, "mup", "sgd"))
    # The identity keeps features Theta(1); its gain's update is that of an input-role vector.
    assert s.exponent("rms_dh", "fc2") == 0
    assert s.exponent("update_norm", "scale.weight") == sympy.Rational(1, 2)


@pytest.mark.slow
def test_verify_measures_and_judges_the_new_kind(toy_kind):
    from paramcalc.verify import verify

    good = verify(paramcalc.load_spec(SPEC), "mup", "sgd", widths=[64, 128, 256, 512], seeds=3)
    assert holds(good), good.failures
    judged = {(c.quantity, c.subject) for c in good.checks}
    assert ("update_norm", "scale.weight") in judged and ("rms_dh", "fc2") in judged
    bad = verify(paramcalc.load_spec(SPEC), "ntp", "sgd", widths=[64, 128, 256, 512], seeds=3)
    assert not bad.passed


# A toy parametrization and a toy optimizer, registered from here too --------------------------------
from paramcalc.engine import register_optimizer, register_rule  # noqa: E402
from paramcalc.engine.optimizers import unregister_optimizer  # noqa: E402
from paramcalc.engine.optimizers.base import Optimizer  # noqa: E402
from paramcalc.engine.rules import Scales, unregister_rule  # noqa: E402


class HalfSpectral:
    """Spectral's init and learning rate, each halved: a rule no one wrote for paramcalc."""

    name = "half"
    title = "Half-spectral"
    forms = ("default",)

    def scales(self, shape, optimizer, form):
        from paramcalc.engine.rules.spectral import RULE

        s = RULE.scales(shape, optimizer, form)
        return Scales(s.init_std / 2, s.lr / 2, s.multiplier)

    def attention_scale(self, d_head, d_head_base):
        return 1 / d_head


class SignDescent(Optimizer):
    """Sign descent: ``dW = -lr sign(G)``, Adam's update-size law without its moments."""

    name = "signsgd"
    title = "signSGD"
    symmetry_power = 1
    torch_class = "Adam"  # the emitted usage line; the law is what the derivation uses
    optax_constructor = "optax.sign_sgd"

    def update_norm(self, lr, grad_norm, d_in, fan_out):
        return lr * sympy.sqrt(fan_out * d_in)

    def lr_for_update(self, target, d_in, fan_out):
        return target / sympy.sqrt(fan_out * d_in)


@pytest.fixture
def toy_everything(toy_kind):
    register_rule(HalfSpectral())
    register_optimizer(SignDescent())
    yield
    unregister_rule("half")
    unregister_optimizer("signsgd")


def test_a_toy_rule_and_optimizer_derive_emit_and_tabulate(toy_everything):
    d = paramcalc.derive(SPEC, "half", "signsgd")
    base = paramcalc.derive(SPEC, "spectral", "adam")  # the same update-size law
    assert d["fc2.weight"].lr == base["fc2.weight"].lr / 2
    assert d["fc2.weight"].init_std == base["fc2.weight"].init_std / 2
    for target in EMITTERS:
        assert emit(d, target), target
    assert "optax.sign_sgd" in emit(d, "jax")
    from paramcalc.emit.tables import render_table

    table = render_table(paramcalc.load_spec(SPEC), "markdown")  # every registered rule, side by side
    assert "Half-spectral" in table and "signSGD" in table


@pytest.mark.slow
def test_a_toy_rule_and_optimizer_verify(toy_everything):
    from paramcalc.verify import verify

    report = verify(paramcalc.load_spec(SPEC), "half", "signsgd", widths=[64, 128, 256, 512], seeds=3)
    assert holds(report), report.failures
