"""The abc-symmetry (TP5 Lemma J.1): equivalent forms train the same function.

Symbolically, the effective init std ``multiplier * init_std`` and effective learning rate
``lr * multiplier**p`` are invariant. By execution, two torch MLPs in different forms, fed the same
data and the same random draws, produce the same outputs after several optimizer steps.
"""

from __future__ import annotations

import pytest
import sympy

import paramcalc
from paramcalc import registry
from paramcalc.symbolic import width_symbol
from tests.conftest import mlp_dict

d = width_symbol("d")


def effective(p, power):
    return sympy.simplify(p.multiplier * p.init_std), sympy.simplify(p.lr * p.multiplier**power)


@pytest.mark.parametrize("param", list(registry.PARAMETRIZATIONS))
@pytest.mark.parametrize("opt", list(registry.OPTIMIZERS))
@pytest.mark.parametrize("theta", [sympy.Integer(7), sympy.sqrt(d), 1 / d, d**2 / 3])
def test_shift_preserves_effective_quantities(param, opt, theta):
    base = paramcalc.derive(mlp_dict(), param, opt)
    shifted = base.shift({name: theta for name in base})
    power = base.optimizer.symmetry_power
    for name in base:
        assert shifted[name].multiplier == sympy.simplify(base[name].multiplier * theta)
        assert effective(shifted[name], power) == effective(base[name], power)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_table8_is_table3_shifted(opt):
    t3 = paramcalc.derive(mlp_dict(), "mup", opt)
    t8 = paramcalc.derive(mlp_dict(), "mup", opt, form="table8")
    folded = t8.folded()
    for name in t3:
        assert sympy.simplify(folded[name].init_std - t3[name].init_std) == 0
        assert sympy.simplify(folded[name].lr - t3[name].lr) == 0
        assert folded[name].multiplier == 1


def test_shift_rejects_non_positive():
    base = paramcalc.derive(mlp_dict())
    with pytest.raises(ValueError, match="positive"):
        base.shift({"fc1.weight": -1})


# --- by execution ------------------------------------------------------------------------------


def _train(derivation, widths, opt, steps=4, seed=0):
    """A functional ReLU MLP in float64: h_l = m_l * W_l h_{l-1}; returns outputs after training."""
    torch = pytest.importorskip("torch")
    values = derivation.evaluate(widths)
    names = [n for n in derivation if n.endswith(".weight")]
    gen = torch.Generator().manual_seed(seed)
    params = []
    for name in names:
        shape = tuple(int(s.xreplace({width_symbol(k): v for k, v in
                                      derivation.resolve_widths(widths).items()}))
                      for s in derivation[name].tensor.shape)
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        params.append(torch.nn.Parameter(z * values[name]["init_std"]))
    mults = [values[n]["multiplier"] for n in names]
    x = torch.randn(8, params[0].shape[1], generator=gen, dtype=torch.float64)
    y = torch.randn(8, params[-1].shape[0], generator=gen, dtype=torch.float64)
    groups = [{"params": [p], "lr": 0.05 * values[n]["lr"]} for p, n in zip(params, names)]
    if opt == "sgd":
        optim = torch.optim.SGD(groups)
    else:
        optim = torch.optim.Adam(groups, eps=1e-30)

    def forward():
        h = x
        for i, (w, mlt) in enumerate(zip(params, mults)):
            h = h @ (mlt * w).T
            if i < len(params) - 1:
                h = torch.relu(h)
        return h

    for _ in range(steps):
        optim.zero_grad()
        loss = ((forward() - y) ** 2).mean()
        loss.backward()
        optim.step()
    with torch.no_grad():
        return forward()


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_forms_train_identically(opt):
    torch = pytest.importorskip("torch")
    spec = mlp_dict(widths={"n0": 48, "d": {"base": 32}, "n_out": 3})
    t3 = paramcalc.derive(spec, "mup", opt)
    t8 = paramcalc.derive(spec, "mup", opt, form="table8")
    odd = t3.shift({"fc2.weight": 5, "fc1.weight": sympy.Rational(1, 3)})
    out3 = _train(t3, {"d": 128}, opt)
    out8 = _train(t8, {"d": 128}, opt)
    out_odd = _train(odd, {"d": 128}, opt)
    assert torch.allclose(out3, out8, rtol=1e-9, atol=1e-12)
    assert torch.allclose(out3, out_odd, rtol=1e-9, atol=1e-12)
    # The check can fail: a form that is not equivalent trains differently.
    wrong = paramcalc.derive(spec, "sp", opt)
    assert not torch.allclose(out3, _train(wrong, {"d": 128}, opt), rtol=1e-3)
