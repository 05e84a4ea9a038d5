"""Property tests: for any chain of widths the rules meet their targets at Theta level."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import paramcalc
from paramcalc import registry
from paramcalc.engine.optimizers import OPTIMIZERS
from paramcalc.symbolic import theta_exponent, width_symbol

# A width is fixed (an integer) or a positive multiple of the one scaling width d.
widths = st.one_of(
    st.integers(1, 5000).map(str),
    st.integers(1, 8).map(lambda k: "d" if k == 1 else f"{k}*d"),
)


@st.composite
def chains(draw):
    dims = draw(st.lists(widths, min_size=2, max_size=7))
    first_sparse = draw(st.booleans())
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layer = {"name": f"l{i}", "fan_in": a, "fan_out": b, "bias": draw(st.booleans())}
        if i == 0 and first_sparse:
            layer["input"] = "sparse"
        layers.append(layer)
    base = draw(st.sampled_from([1, 16, 64, 256]))
    return {"name": "chain", "widths": {"d": {"base": base}}, "layers": layers}


def _exps(p, scaling):
    t = p.tensor
    return theta_exponent(t.d_in, scaling), theta_exponent(t.fan_out, scaling)


@settings(max_examples=60, deadline=None)
@given(chains(), st.sampled_from(list(registry.OPTIMIZERS)))
def test_spectral_meets_condition_1(spec, opt):
    """||W||_* ~ sigma (sqrt(fan_out) + sqrt(d_in)) and the optimizer's ||dW||_* both scale as
    sqrt(fan_out / d_in) (natural norms, App. E)."""
    dd = paramcalc.derive(spec, "spectral", opt)
    scaling = dd.spec.scaling_symbols
    for p in dd.values():
        if p.tensor.init != "normal":
            continue
        e_in, e_out = _exps(p, scaling)
        target = (e_out - e_in) / 2
        e = p.exponents
        assert e["init_std"] + max(e_in, e_out) / 2 == target
        if opt == "sgd":  # ||grad||_* ~ sqrt(d_in/fan_out) under Condition 1 (Eq. 20)
            assert e["lr"] + (e_in - e_out) / 2 == target
        elif p.optimizer == "muon":  # orthogonalised: ||dW||_* = lr sqrt(max(1, fan_out / d_in))
            assert e["lr"] + max(0, e_out - e_in) / 2 == target
        else:  # sign-like update: ||dW||_* = lr sqrt(fan_out d_in)
            assert e["lr"] + (e_in + e_out) / 2 == target


@settings(max_examples=60, deadline=None)
@given(chains(), st.sampled_from(list(registry.OPTIMIZERS)))
def test_mup_matches_spectral_exponents_and_sp_at_base(spec, opt):
    mup = paramcalc.derive(spec, "mup", opt)
    spectral = paramcalc.derive(spec, "spectral", opt)
    sp = paramcalc.derive(spec, "sp", opt)
    assert mup.exponents() == spectral.exponents()
    at_base, sp_base = mup.evaluate(), sp.evaluate()
    for name in at_base:
        assert at_base[name] == pytest.approx(sp_base[name], rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(chains(), st.sampled_from(list(registry.PARAMETRIZATIONS)),
       st.sampled_from(list(registry.OPTIMIZERS)), st.integers(1, 12))
def test_numbers_match_sympy(spec, param, opt, doublings):
    """The fast evaluator agrees with sympy's own substitution."""
    dd = paramcalc.derive(spec, param, opt)
    width = dd.spec.widths["d"].value * 2**doublings
    values = dd.evaluate({"d": width})
    subs = {width_symbol("d"): width}
    for name, p in dd.items():
        for q in ("init_std", "lr", "multiplier"):
            exact = float(sympy.N(p.expr(q).xreplace(subs), 20))
            assert values[name][q] == pytest.approx(exact, rel=1e-12, abs=0), (name, q)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(2, 60), st.integers(0, 2**31 - 1))
def test_update_size_laws(fan_out, d_in, seed):
    """The laws in optimizers.py: a rank-one gradient G = g h^T; SGD moves lr*||g||*||h||,
    sign descent (Adam without momentum) moves lr*sqrt(fan_out*d_in) in spectral norm."""
    rng = np.random.default_rng(seed)
    g, h = rng.standard_normal(fan_out), rng.standard_normal(d_in)
    grad = np.outer(g, h)
    lr = 0.3
    sgd = OPTIMIZERS["sgd"].update_norm(sympy.Float(lr), sympy.Float(np.linalg.norm(g) * np.linalg.norm(h)),
                                        sympy.Integer(d_in), sympy.Integer(fan_out))
    adam = OPTIMIZERS["adam"].update_norm(sympy.Float(lr), sympy.Float(1.0),
                                          sympy.Integer(d_in), sympy.Integer(fan_out))
    assert np.linalg.norm(lr * grad, 2) == pytest.approx(float(sgd), rel=1e-9)
    assert np.linalg.norm(lr * np.sign(grad), 2) == pytest.approx(float(adam), rel=1e-9)
