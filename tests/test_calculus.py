"""The first-step scaling calculus against exponents worked out by hand from the paper.

The paper's MLP: input ``n0`` (fixed), hidden ``n`` (scaling), output 1 (fixed), ReLU, no biases.
Each expected exponent below is derived in the comments from the per-layer laws the paper states
(Sec. 3.1: ``||h_l|| = sigma_l sqrt(n_l) ||h_{l-1}||``; Eq. 6 and Claim 2 for SGD, Sec. 3.3 for Adam;
Eqs. 21-22 and Parametrization 1 for the init and learning rates), not read from the code under test.
"""

from __future__ import annotations

import math

import pytest
import sympy
from sympy import Rational as R

import paramcalc
from paramcalc.engine.calculus import (
    ETA,
    QUANTITIES,
    NotAChain,
    chain_problems,
    scaling,
    target_exponents,
)
from paramcalc.errors import SpecError
from paramcalc.verify.calibrate import calculus_lr
from paramcalc.verify.fit import loglog_slope, predicted_slope
from paramcalc.verify.widths import sweep
from tests.conftest import EXAMPLES, paper_mlp

PAPER_MLP = paper_mlp()

HALF = R(1, 2)

# (RMS(dh_1), RMS(dh_2), RMS(df)), (||dW_1||, ||dW_2||, ||dW_3||), ||W_3||: Theta-exponents in n.
#
# Forward at init, all four: ||x|| = sqrt(n0) -> 0; sigma_1 = Theta(1/sqrt(n0)) -> ||h_1|| ~ sqrt(n) (1/2);
# sigma_2 = 1/sqrt(n) -> ||h_2|| ~ sqrt(n). Readout sigma_3: spectral/muP 1/n, NTP/SP 1/sqrt(n).
# Backward: g_3 = Theta(1); g_2 = sigma_3 sqrt(n) g_3 (muP -1/2, NTP/SP 0); g_1 = sigma_2 sqrt(n) g_2.
# SGD ||dW_l|| = eta_l ||g_l|| ||h_{l-1}||; Adam ||dW_l|| = eta_l sqrt(n_l n_{l-1}).
# ||dh_l|| = max(||dW_l|| ||h_{l-1}||, ||W_l|| ||dh_{l-1}||) with ||W_1|| ~ sqrt(n) (1/2), ||W_2|| ~ 1 (0),
# ||W_3|| = sigma_3 sqrt(n).
EXPECTED = {
    # muP / spectral SGD: eta = (n, 1, 1/n). dW_1 = 1 - 1/2 + 0 = 1/2; dW_2 = 0 - 1/2 + 1/2 = 0;
    # dW_3 = -1 + 0 + 1/2 = -1/2. dh_1 = 1/2 (RMS 0); dh_2 = max(0 + 1/2, 0 + 1/2) (RMS 0);
    # df = max(-1/2 + 1/2, -1/2 + 1/2) = 0. Condition 1 at every layer, Desideratum 1 (Sec. 5.1).
    ("spectral", "sgd"): ((0, 0, 0), (HALF, 0, -HALF), -HALF),
    ("mup", "sgd"): ((0, 0, 0), (HALF, 0, -HALF), -HALF),
    # NTP SGD (Eq. 22): eta = (1, 1/n, 1/n). dW_1 = 0; dW_2 = -1 + 0 + 1/2 = -1/2; dW_3 = -1/2.
    # dh_1 = 0 (RMS -1/2); dh_2 = max(-1/2 + 1/2, 0 + 0) = 0 (RMS -1/2): feature learning vanishes like
    # n^-1/2 (Sec. 5.3, Lee et al. 2019); df = max(-1/2 + 1/2, 0 + 0) = 0: the output still moves.
    ("ntp", "sgd"): ((-HALF, -HALF, 0), (0, -HALF, -HALF), 0),
    # SP SGD (Eq. 21): eta = 1. dW_1 = 0; dW_2 = 0 + 0 + 1/2 = 1/2; dW_3 = 1/2. dh_1 = 0 (RMS -1/2);
    # dh_2 = max(1/2 + 1/2, 0) = 1 (RMS +1/2, blows up); df = max(1/2 + 1/2, 0 + 1) = 1 (Sec. 5.2).
    ("sp", "sgd"): ((-HALF, HALF, 1), (0, HALF, HALF), 0),
    # Adam, spectral/muP: eta = (1/n0, 1/n, 1/n) up to constants. dW_1 = sqrt(n n0) -> 1/2;
    # dW_2 = -1 + 1 = 0; dW_3 = -1 + 1/2 = -1/2: the same sizes as SGD (Sec. 3.3).
    ("spectral", "adam"): ((0, 0, 0), (HALF, 0, -HALF), -HALF),
    ("mup", "adam"): ((0, 0, 0), (HALF, 0, -HALF), -HALF),
    # NTP Adam (1/fan_in, Everett et al. 2024): updates as spectral, but ||W_3|| = sigma_3 sqrt(n) = Theta(1),
    # sqrt(n) above Condition 1, so df = ||W_3|| ||dh_2|| = 0 + 1/2: the output change blows up.
    ("ntp", "adam"): ((0, 0, HALF), (HALF, 0, -HALF), 0),
    # SP Adam: eta = 1. dW_1 = 1/2; dW_2 = 1; dW_3 = 1/2. dh_2 = 1 + 1/2 (RMS 1); df = 0 + 3/2.
    ("sp", "adam"): ((0, 1, R(3, 2)), (HALF, 1, HALF), 0),
}


@pytest.mark.parametrize(("param", "opt"), list(EXPECTED))
def test_paper_mlp_exponents(param, opt):
    (dh1, dh2, df), (dw1, dw2, dw3), w3 = EXPECTED[(param, opt)]
    s = scaling(paramcalc.derive(PAPER_MLP, param, opt))
    got = (
        (s.exponent("rms_dh", "fc1"), s.exponent("rms_dh", "fc2"), s.exponent("rms_dh", "head")),
        (s.exponent("update_norm", "fc1.weight"), s.exponent("update_norm", "fc2.weight"),
         s.exponent("update_norm", "head.weight")),
        s.exponent("spectral_norm", "head.weight"),
    )
    assert got == ((dh1, dh2, df), (dw1, dw2, dw3), w3)
    # Features at init are Theta(1) in RMS under all four (Sec. 3.1: sigma_l sqrt(n_l) ||h_{l-1}||).
    assert s.exponent("rms_h", "fc1") == 0 and s.exponent("rms_h", "fc2") == 0


def test_targets_are_condition_1_and_desideratum_1():
    targets = target_exponents(paramcalc.load_spec(PAPER_MLP))
    assert targets[("spectral_norm", "fc1.weight")] == HALF  # sqrt(n / n0)
    assert targets[("update_norm", "fc2.weight")] == 0  # sqrt(n / n)
    assert targets[("update_norm", "head.weight")] == -HALF  # sqrt(1 / n)
    assert targets[("rms_h", "fc2")] == 0 and targets[("rms_dh", "head")] == 0
    assert ("rms_h", "head") not in targets  # the output is not a hidden feature


def test_spectral_and_mup_meet_every_target_in_the_limit():
    for param in ("spectral", "mup"):
        for opt in ("sgd", "adam"):
            s = scaling(paramcalc.derive(PAPER_MLP, param, opt))
            for p in s.predictions.values():
                if p.target is not None:
                    assert p.exponent == p.target, (param, opt, p.quantity, p.subject)


def test_weight_norm_is_the_random_matrix_law_at_finite_width():
    """||W_1||_* = sigma_1 (sqrt(n) + sqrt(n0)) (Sec. 4), at each width, exactly."""
    d = paramcalc.derive(PAPER_MLP, "mup", "sgd")
    s = scaling(d)
    for n in (64, 1024, 8192):
        value = s.evaluate({"d": n})[("spectral_norm", "fc1.weight")]
        assert value == pytest.approx((math.sqrt(n) + math.sqrt(3072)) / math.sqrt(3072))


def test_spectral_first_layer_shrinks_below_n0_by_design():
    """Parametrization 1's min(1, sqrt(n/n0)): RMS(h_1) grows like n^1/2 until n = n0, then is flat.
    The calculus' exponent is the limit (0); its finite-width slope says what is measured."""
    spec = paramcalc.load_spec(PAPER_MLP)
    s = scaling(paramcalc.derive(spec, "spectral", "sgd"))
    assert s.exponent("rms_h", "fc1") == 0
    below = sweep(spec, [64, 128, 256, 512, 1024])
    above = sweep(spec, [4096, 8192, 16384])
    assert predicted_slope(s, "rms_h", "fc1", below) == pytest.approx(0.5)
    assert predicted_slope(s, "rms_h", "fc1", above) == pytest.approx(0.0, abs=1e-12)
    notes = s.notes(below)
    assert [n.layer for n in notes] == ["fc1"] and "min(1, sqrt(fan_out/fan_in))" in notes[0].message
    assert s.notes(above) == []
    # muP keeps sigma_1 = 1/sqrt(n0): no shrink, and its note names only the fan-in effect.
    mup = scaling(paramcalc.derive(spec, "mup", "sgd"))
    assert predicted_slope(mup, "rms_h", "fc1", below) == pytest.approx(0.0, abs=1e-12)
    assert "min(1" not in mup.notes(below)[0].message


def test_updates_are_linear_in_the_global_learning_rate_and_calibration_hits_its_target():
    s = scaling(paramcalc.derive(PAPER_MLP, "ntp", "sgd"))
    one = s.evaluate({"d": 512}, lr=1.0)
    two = s.evaluate({"d": 512}, lr=2.0)
    assert two[("update_norm", "fc2.weight")] == pytest.approx(2 * one[("update_norm", "fc2.weight")])
    assert two[("spectral_norm", "fc2.weight")] == one[("spectral_norm", "fc2.weight")]
    lr = calculus_lr(s, None, 0.1)
    assert s.evaluate(None, lr)[("rms_dh", "head")] == pytest.approx(0.1)
    assert s[("update_norm", "fc2.weight")].expr.has(ETA)


def test_forms_related_by_the_abc_symmetry_predict_the_same():
    """muP's table3 and table8 forms train the same function (TP5 Lemma J.1)."""
    spec = paramcalc.load_spec(EXAMPLES / "mlp.yaml")
    for opt in ("sgd", "adam"):
        a = scaling(paramcalc.derive(spec, "mup", opt)).evaluate({"d": 512}, lr=0.01)
        b = scaling(paramcalc.derive(spec, "mup", opt, form="table8")).evaluate({"d": 512}, lr=0.01)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-12), key


def test_biases_follow_appendix_d():
    """A bias is an n x 1 matrix with input 1: Condition 1 asks ||db|| = Theta(sqrt(n)) (App. D)."""
    spec = paramcalc.load_spec(EXAMPLES / "mlp.yaml")
    for opt in ("sgd", "adam"):
        s = scaling(paramcalc.derive(spec, "spectral", opt))
        assert s.exponent("update_norm", "fc1.bias") == HALF
        assert ("spectral_norm", "fc1.bias") not in s  # zero init: nothing to measure at init


def test_centered_loss_removes_the_output_from_the_gradient():
    """muP's readout init 16/d makes f_0 comparable to the targets below the base width; the centered
    loss sees f - f_0, whose gradient at init is the targets' alone at every width."""
    spec = paramcalc.load_spec(PAPER_MLP)
    widths = sweep(spec, [64, 128, 256, 512, 1024])
    raw = scaling(paramcalc.derive(spec, "mup", "sgd"))
    centered = scaling(paramcalc.derive(spec, "mup", "sgd"), centered=True)
    assert predicted_slope(raw, "update_norm", "fc2.weight", widths) < -0.05
    assert predicted_slope(centered, "update_norm", "fc2.weight", widths) == pytest.approx(0.0, abs=1e-12)
    assert raw.exponent("update_norm", "fc2.weight") == centered.exponent("update_norm", "fc2.weight") == 0


def test_cross_entropy_and_norm_layers():
    spec = {
        "name": "normed", "activation": "gelu",
        "widths": {"n0": 100, "d": {"base": 64}, "k": 10},
        "layers": [
            {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
            {"name": "ln", "kind": "layernorm", "dim": "d"},
            {"name": "fc2", "fan_in": "d", "fan_out": "d"},
            {"name": "head", "fan_in": "d", "fan_out": "k"},
        ],
    }
    for param, dh in (("mup", 0), ("ntp", -HALF)):
        s = scaling(paramcalc.derive(spec, param, "sgd"), loss="ce")
        assert s.exponent("rms_dh", "fc2") == dh
        # The gain is an n x 1 matrix: Condition 1 asks Theta(sqrt(n)) of it and of its update.
        assert s.exponent("spectral_norm", "ln.weight") == HALF
        assert s[("update_norm", "ln.weight")].target == HALF


def test_embedding_input_is_one_hot():
    s = scaling(paramcalc.derive(paramcalc.load_spec(EXAMPLES / "classifier.yaml"), "spectral", "adam"))
    # One-hot input: ||x|| = 1, d_in = 1 (App. E): Adam's ||dW|| = eta sqrt(n * 1) with eta = 1.
    assert s.exponent("update_norm", "embed.weight") == HALF
    assert s.exponent("rms_dh", "embed") == 0


def test_not_a_chain():
    spec = paramcalc.load_spec(EXAMPLES / "gpt.yaml")
    problems = chain_problems(spec)
    assert problems and "'blocks.0.attn' is a layer of kind attention" in str(problems[0])
    with pytest.raises(NotAChain, match="chains of linear"):
        scaling(paramcalc.derive(spec, "mup", "adam"))
    with pytest.raises(ValueError, match="unknown loss"):
        scaling(paramcalc.derive(PAPER_MLP, "mup", "adam"), loss="hinge")


def test_sweep_scales_every_width_in_proportion():
    spec = paramcalc.load_spec(EXAMPLES / "gpt.yaml")
    (at,) = sweep(spec, [1536])
    assert at["d_model"] == 1536 and at["n_heads"] == 24 and at["d_head"] == 64 and at["vocab"] == 50257
    with pytest.raises(SpecError, match="n_heads") as exc:
        sweep(spec, [1000])
    assert "multiple of 64" in str(exc.value)
    with pytest.raises(SpecError, match="no scaling width"):
        sweep(paramcalc.load_spec({"name": "x", "widths": {"a": 3}, "layers": [
            {"name": "l", "fan_in": "a", "fan_out": "a"}]}), [8])


def test_loglog_slope():
    assert loglog_slope([1, 2, 4, 8], [3 * x**-0.5 for x in (1, 2, 4, 8)]) == pytest.approx(-0.5)
    assert math.isnan(loglog_slope([1, 2], [1.0, float("nan")]))
    assert loglog_slope([1, 2, 4], [1.0, 0.0, 4.0]) == pytest.approx(1.0)  # zeros are left out


def test_every_quantity_is_described():
    for q in QUANTITIES.values():
        assert q.title and q.reference
    s = scaling(paramcalc.derive(PAPER_MLP, "spectral", "sgd"))
    assert {p.quantity for p in s.predictions.values()} <= set(QUANTITIES)
    assert isinstance(s.exponent("alignment", "head"), sympy.Rational)
