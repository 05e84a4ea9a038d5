"""Every parametrization x optimizer x tensor role, against values written out from the papers.

Expected expressions are typed here from the formulas (paper Parametrization 1, Eqs. 21-22,
App. A, App. D; TP5 Tables 3 and 8), not produced by the code under test.
"""

from __future__ import annotations

import pytest
import sympy
from sympy import Rational as R
from sympy import sqrt

import paramcalc
from paramcalc.engine.rules.spectral import min_one
from paramcalc.symbolic import width_symbol

n0, d, n_out, vocab = (width_symbol(s) for s in ("n0", "d", "n_out", "vocab"))
ONE = sympy.Integer(1)

SPEC = {
    "name": "roles",
    "widths": {"n0": 3072, "d": {"base": 256}, "n_out": 10, "vocab": 1000},
    "layers": [
        {"name": "inp", "fan_in": "n0", "fan_out": "d"},
        {"name": "hid", "fan_in": "d", "fan_out": "d", "bias": True, "bias_init": "normal"},
        {"name": "out", "fan_in": "d", "fan_out": "n_out"},
        {"name": "fix", "fan_in": "n0", "fan_out": "n_out"},
        {"name": "emb", "fan_in": "vocab", "fan_out": "d", "input": "sparse"},
        {"name": "up", "fan_in": "d", "fan_out": "4*d"},
        {"name": "down", "fan_in": "4*d", "fan_out": "d"},
        {"name": "ln", "kind": "norm", "dim": "d", "bias": True},
    ],
}


def m(x):  # Min(1, x) as the spectral rule writes it
    return min_one(x)


# (tensor, role, init_std, sgd lr, adam lr); multiplier 1 everywhere in these forms.
EXPECTED = {
    "spectral": [
        ("inp.weight", "input", m(sqrt(d) / sqrt(n0)) / sqrt(n0), d / n0, 1 / n0),
        ("hid.weight", "hidden", 1 / sqrt(d), ONE, 1 / d),
        ("hid.bias", "input", ONE, d, ONE),  # App. D: sigma_b = Theta(1), eta_b = Theta(n)
        ("out.weight", "output", m(sqrt(n_out) / sqrt(d)) / sqrt(d), n_out / d, 1 / d),
        ("fix.weight", "fixed", m(sqrt(n_out) / sqrt(n0)) / sqrt(n0), n_out / n0, 1 / n0),
        ("emb.weight", "input", ONE, d, ONE),  # one-hot input: d_in = 1 (App. E)
        ("up.weight", "hidden", 1 / sqrt(d), 4 * ONE, 1 / d),
        ("down.weight", "hidden", 1 / (4 * sqrt(d)), R(1, 4), 1 / (4 * d)),
        ("ln.weight", "input", 0, d, ONE),
        ("ln.bias", "input", 0, d, ONE),
    ],
    # TP5 Table 3, relative to base width 256 (equal to SP there).
    "mup": [
        ("inp.weight", "input", 1 / sqrt(n0), d / 256, ONE),
        ("hid.weight", "hidden", 1 / sqrt(d), ONE, 256 / d),
        ("hid.bias", "input", ONE, d / 256, ONE),
        ("out.weight", "output", 16 / d, 256 / d, 256 / d),
        ("fix.weight", "fixed", 1 / sqrt(n0), ONE, ONE),
        ("emb.weight", "input", ONE, d / 256, ONE),
        ("up.weight", "hidden", 1 / sqrt(d), ONE, 256 / d),
        ("down.weight", "hidden", 1 / (2 * sqrt(d)), ONE, 256 / d),
        ("ln.weight", "input", 0, d / 256, ONE),
        ("ln.bias", "input", 0, d / 256, ONE),
    ],
    # Eq. 22 (and Everett et al. 2024 for Adam): 1/sqrt(d_in), 1/d_in.
    "ntp": [
        ("inp.weight", "input", 1 / sqrt(n0), 1 / n0, 1 / n0),
        ("hid.weight", "hidden", 1 / sqrt(d), 1 / d, 1 / d),
        ("hid.bias", "input", ONE, ONE, ONE),
        ("out.weight", "output", 1 / sqrt(d), 1 / d, 1 / d),
        ("fix.weight", "fixed", 1 / sqrt(n0), 1 / n0, 1 / n0),
        ("emb.weight", "input", ONE, ONE, ONE),
        ("up.weight", "hidden", 1 / sqrt(d), 1 / d, 1 / d),
        ("down.weight", "hidden", 1 / (2 * sqrt(d)), 1 / (4 * d), 1 / (4 * d)),
        ("ln.weight", "input", 0, ONE, ONE),
        ("ln.bias", "input", 0, ONE, ONE),
    ],
    # Eq. 21: 1/sqrt(d_in), constant learning rate.
    "sp": [
        ("inp.weight", "input", 1 / sqrt(n0), ONE, ONE),
        ("hid.weight", "hidden", 1 / sqrt(d), ONE, ONE),
        ("hid.bias", "input", ONE, ONE, ONE),
        ("out.weight", "output", 1 / sqrt(d), ONE, ONE),
        ("fix.weight", "fixed", 1 / sqrt(n0), ONE, ONE),
        ("emb.weight", "input", ONE, ONE, ONE),
        ("up.weight", "hidden", 1 / sqrt(d), ONE, ONE),
        ("down.weight", "hidden", 1 / (2 * sqrt(d)), ONE, ONE),
        ("ln.weight", "input", 0, ONE, ONE),
        ("ln.bias", "input", 0, ONE, ONE),
    ],
}

CASES = [
    (param, opt, name, role, std, sgd if opt == "sgd" else adam)
    for param, rows in EXPECTED.items()
    for (name, role, std, sgd, adam) in rows
    for opt in ("sgd", "adam")
]


@pytest.mark.parametrize(("param", "opt", "name", "role", "std", "lr"), CASES)
def test_table(param, opt, name, role, std, lr):
    p = paramcalc.derive(SPEC, param, opt)[name]
    assert p.role == role
    assert sympy.simplify(p.init_std - std) == 0, (p.init_std, std)
    assert sympy.simplify(p.lr - lr) == 0, (p.lr, lr)
    assert p.multiplier == 1
    if name == "ln.weight":
        assert p.init_mean == 1  # a gain starts at one


def test_every_role_and_parametrization_covered():
    roles = {role for _, _, _, role, _, _ in CASES}
    assert roles == {"input", "hidden", "output", "fixed"}
    from paramcalc.engine import RULES

    assert {c[0] for c in CASES} == set(RULES)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mup_table8_output(opt):
    """TP5 Table 8: output multiplier 1/m, init var 1 (relative: m/fan_in), SGD lr m, Adam lr 1."""
    p = paramcalc.derive(SPEC, "mup", opt, form="table8")["out.weight"]
    assert p.multiplier == 256 / d
    assert p.init_std == R(1, 16)  # sqrt(m)/sqrt(d) = sqrt(d/256)/sqrt(d)
    assert p.lr == (d / 256 if opt == "sgd" else 1)
    # Only the readout changes form.
    t3 = paramcalc.derive(SPEC, "mup", opt)
    t8 = paramcalc.derive(SPEC, "mup", opt, form="table8")
    assert [n for n in t3 if t3[n] != t8[n]] == ["out.weight"]


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown parametrization 'mu'.*spectral, mup, ntp, sp"):
        paramcalc.derive(SPEC, "mu")
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'.*sgd, adam"):
        paramcalc.derive(SPEC, "mup", "rmsprop")
    with pytest.raises(ValueError, match="forms table3, table8"):
        paramcalc.derive(SPEC, "mup", form="table5")


# --- the paper's own numbers ------------------------------------------------------------------

APPENDIX_A = {
    "name": "paper-mlp",
    "widths": {"n0": 3072, "d": {"base": 1}, "n3": 1},
    "layers": [
        {"name": "W1", "fan_in": "n0", "fan_out": "d", "gain": "sqrt(2)"},
        {"name": "W2", "fan_in": "d", "fan_out": "d", "gain": "sqrt(2)"},
        {"name": "W3", "fan_in": "d", "fan_out": "n3", "gain": "sqrt(2)"},
    ],
}


@pytest.mark.parametrize("width", [3072, 4096, 2**14])
def test_appendix_a_mup_constants_from_spectral(width):
    """App. A's muP: sigma = sqrt(2/n0), sqrt(2/d), sqrt(2)/d; eta = d/n0, 1, 1/d (d >= n0)."""
    v = paramcalc.derive(APPENDIX_A, "spectral", "sgd").evaluate({"d": width})
    expected = {
        "W1.weight": (sqrt(R(2, 3072)), R(width, 3072)),
        "W2.weight": (sqrt(R(2, width)), 1),
        "W3.weight": (sqrt(2) / width, R(1, width)),
    }
    for name, (std, lr) in expected.items():
        assert v[name]["init_std"] == pytest.approx(float(std), rel=1e-12)
        assert v[name]["lr"] == pytest.approx(float(lr), rel=1e-12)


def test_appendix_a_below_input_width_spectral_shrinks_first_layer():
    """For d < n0 the first layer has fan_out < fan_in: Parametrization 1 keeps the
    min(1, sqrt(d/n0)) that App. A (which treats n0 as a constant) drops."""
    v = paramcalc.derive(APPENDIX_A, "spectral", "sgd").evaluate({"d": 768})
    assert v["W1.weight"]["init_std"] == pytest.approx(float(sqrt(R(2, 3072)) * sqrt(R(768, 3072))))


def _appendix_a_features() -> dict:
    spec = {**APPENDIX_A, "layers": [dict(layer) for layer in APPENDIX_A["layers"]]}
    spec["layers"][0]["init"] = "features"
    return spec


@pytest.mark.parametrize("width", [16, 64, 256, 1024, 3072, 4096])
def test_init_features_is_appendix_a_at_every_width(width):
    """``init: features`` on the first layer gives App. A's muP constants (typed here from App. A)
    at every one of the paper's widths, below n0 = 3072 too, where the default shrinks sigma_1."""
    v = paramcalc.derive(_appendix_a_features(), "spectral", "sgd").evaluate({"d": width})
    expected = {
        "W1.weight": (sqrt(R(2, 3072)), R(width, 3072)),
        "W2.weight": (sqrt(R(2, width)), 1),
        "W3.weight": (sqrt(2) / width, R(1, width)),
    }
    for name, (std, lr) in expected.items():
        assert v[name]["init_std"] == pytest.approx(float(std), rel=1e-12), name
        assert v[name]["lr"] == pytest.approx(float(lr), rel=1e-12), name
    default = paramcalc.derive(APPENDIX_A, "spectral", "sgd").evaluate({"d": width})["W1.weight"]
    shrink = min(1.0, (width / 3072) ** 0.5)
    assert default["init_std"] == pytest.approx(float(sqrt(R(2, 3072))) * shrink, rel=1e-12)


@pytest.mark.parametrize("param", ["mup", "ntp", "sp"])
def test_init_features_changes_only_the_spectral_rule(param):
    """The other rules have no shrink: ``init: features`` leaves them as they are."""
    plain = paramcalc.derive(APPENDIX_A, param, "adam").evaluate({"d": 64})
    features = paramcalc.derive(_appendix_a_features(), param, "adam").evaluate({"d": 64})
    assert features == plain


@pytest.mark.parametrize("layer, index, message", [
    ({"name": "W2", "fan_in": "d", "fan_out": "d", "init": "features"}, 1, "input dimension d scales"),
    ({"name": "W3", "fan_in": "d", "fan_out": "n3", "tie": "W1", "init": "features"}, 2, "not tie"),
])
def test_init_features_refused_where_the_shrink_is_the_rule(layer, index, message):
    spec = {**APPENDIX_A, "layers": [dict(x) for x in APPENDIX_A["layers"]]}
    spec["layers"][index] = layer
    with pytest.raises(paramcalc.SpecError, match=rf"layers\[{index}\]\.init.*{message}"):
        paramcalc.load_spec(spec)


def test_init_features_round_trips_through_yaml():
    spec = paramcalc.load_spec(_appendix_a_features())
    again = paramcalc.load_spec(spec.to_yaml())
    assert "init: features" in spec.to_yaml()
    assert paramcalc.derive(again, "spectral", "sgd").evaluate({"d": 16}) == \
        paramcalc.derive(spec, "spectral", "sgd").evaluate({"d": 16})


def test_appendix_a_mup_form_with_base_width_one():
    """App. A: 'These parameterizations are equivalent at d = 1' -> muP relative to base 1
    gives App. A's sigmas exactly and its etas up to the width-independent constant n0 in eta_1."""
    dd = paramcalc.derive(APPENDIX_A, "mup", "sgd")
    assert dd["W1.weight"].init_std == sqrt(2) / sqrt(width_symbol("n0"))
    assert dd["W2.weight"].init_std == sqrt(2) / sqrt(d)
    assert dd["W3.weight"].init_std == sqrt(2) / d
    assert (dd["W1.weight"].lr, dd["W2.weight"].lr, dd["W3.weight"].lr) == (d, 1, 1 / d)


def test_appendix_a_ntp_constants():
    """App. A's NTP: sigma_l = sqrt(2/n_{l-1}), eta_l = 1/n_{l-1}."""
    dd = paramcalc.derive(APPENDIX_A, "ntp", "sgd")
    n0s, n3 = width_symbol("n0"), width_symbol("n3")
    assert dd["W1.weight"].init_std == sqrt(2) / sqrt(n0s) and dd["W1.weight"].lr == 1 / n0s
    assert dd["W2.weight"].init_std == sqrt(2) / sqrt(d) and dd["W2.weight"].lr == 1 / d
    assert dd["W3.weight"].init_std == sqrt(2) / sqrt(d) and dd["W3.weight"].lr == 1 / d
    assert n3 not in dd["W3.weight"].init_std.free_symbols


def test_parametrizations_agree_at_width_one():
    """App. A: muP and NTP 'are equivalent at d = 1'."""
    mup = paramcalc.derive(APPENDIX_A, "mup", "sgd").evaluate({"d": 1})
    ntp = paramcalc.derive(APPENDIX_A, "ntp", "sgd").evaluate({"d": 1})
    assert mup["W2.weight"] == pytest.approx(ntp["W2.weight"])
    assert mup["W3.weight"] == pytest.approx(ntp["W3.weight"])


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mup_equals_sp_at_base_widths(opt):
    mup = paramcalc.derive(SPEC, "mup", opt).evaluate()
    sp = paramcalc.derive(SPEC, "sp", opt).evaluate()
    for name in sp:
        assert mup[name] == pytest.approx(sp[name], rel=1e-12), name


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_mup_exponents_equal_spectral(opt):
    mup = paramcalc.derive(SPEC, "mup", opt).exponents()
    spectral = paramcalc.derive(SPEC, "spectral", opt).exponents()
    assert mup == spectral


def test_theta_exponents():
    e = paramcalc.derive(SPEC, "spectral", "sgd").exponents()
    assert e["inp.weight"] == {"init_std": 0, "lr": 1, "multiplier": 0}
    assert e["hid.weight"] == {"init_std": R(-1, 2), "lr": 0, "multiplier": 0}
    assert e["out.weight"] == {"init_std": -1, "lr": -1, "multiplier": 0}
    assert e["ln.weight"]["init_std"] is None  # a constant init has no random scale
    assert e["hid.bias"] == {"init_std": 0, "lr": 1, "multiplier": 0}


def test_fixed_widths_cannot_be_overridden_when_evaluating():
    d = paramcalc.derive(SPEC, "spectral", "sgd")
    n0 = d.spec.widths["n0"].value
    fixed = r"width 'n0' is fixed at \d+ in spec 'roles', got 64; to let it change, declare it scaling"
    with pytest.raises(paramcalc.SpecError, match=fixed + r": `n0: \{base: \d+\}`"):
        d.evaluate({"d": 512, "n0": 64})
    v = d.evaluate({"d": 512, "n0": n0})  # its own value: accepted (the full dict a model is built with)
    assert v == d.evaluate({"d": 512})


def test_evaluate_rejects_unknown_and_bad_widths():
    dd = paramcalc.derive(SPEC)
    with pytest.raises(paramcalc.SpecError, match="widths.dd: unknown width symbol"):
        dd.evaluate({"dd": 3})
    with pytest.raises(paramcalc.SpecError, match="widths.d: expected a positive integer"):
        dd.evaluate({"d": 0})


def test_init_features_on_a_patch_embedding():
    """A ViT-style patch embedding (3 channels, 16x16 patches: d_in = 768 fixed) below d = 768."""
    spec = {"name": "patch", "widths": {"c": 3, "d": {"base": 192}},
            "layers": [{"kind": "conv", "name": "patch", "in_channels": "c", "out_channels": "d",
                        "kernel_size": 16, "init": "features"}]}
    assert paramcalc.derive(spec, "spectral", "adam").evaluate()["patch.weight"]["init_std"] == \
        pytest.approx(768 ** -0.5, rel=1e-12)
    spec["layers"][0]["init"] = "norm"
    assert paramcalc.derive(spec, "spectral", "adam").evaluate()["patch.weight"]["init_std"] == \
        pytest.approx(768 ** -0.5 * (192 / 768) ** 0.5, rel=1e-12)
