"""``paramcalc.verify``: verdicts on the paper's MLP, measurements against direct computation, and the
edges (divergence, memory, user factories, other data, non-chain specs, bad input).

Widths are small (32..256) so that the whole file runs in seconds on a CPU; the verdicts there are
the paper's (Sec. 5): muP and spectral keep Desideratum 1 and Condition 1, NTP and SP do not.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.errors import DeviceError, FactoryError, UsageError  # noqa: E402
from paramcalc.verify import (  # noqa: E402
    measure_width,
    present,  # noqa: E402
    verify,
)
from paramcalc.verify import model as model_module  # noqa: E402
from paramcalc.verify.data import make_batch  # noqa: E402
from paramcalc.verify.measure import RunSettings  # noqa: E402
from paramcalc.verify.model import apply_parametrization, build  # noqa: E402
from tests.conftest import EXAMPLES, paper_mlp  # noqa: E402

WIDTHS = [32, 64, 128, 256]


# What must fail, by the paper (and tests/test_calculus.py's exponents): (quantity, subject) pairs.
MUST_FAIL = {
    ("ntp", "sgd"): {("rms_dh", "fc1"), ("rms_dh", "fc2"), ("update_norm", "fc2.weight"),
                     ("spectral_norm", "head.weight")},
    ("sp", "sgd"): {("rms_dh", "fc1"), ("update_norm", "fc2.weight"), ("update_norm", "head.weight"),
                    ("spectral_norm", "head.weight")},
    ("ntp", "adam"): {("rms_dh", "head"), ("spectral_norm", "head.weight")},
    ("sp", "adam"): {("rms_dh", "head"), ("update_norm", "fc2.weight"), ("update_norm", "head.weight")},
}


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("param", ["spectral", "mup", "ntp", "sp"])
def test_paper_mlp_verdicts(param, opt):
    # A PASS needs the evidence for one (paramcalc.verify.evidence): the default sweep (64..1024) and
    # seeds (8); a failure shows already on a small sweep.
    conclusive = param in ("spectral", "mup")
    sweep = {"steps": 2} if conclusive else {"widths": WIDTHS, "seeds": 3, "steps": 2}
    report = verify(paper_mlp(), param, opt, device="cpu", **sweep)
    assert report.emitted  # applied through the emitted PyTorch code
    disagreements = [c.message for c in report.checks if c.kind == "agreement" and not c.passed]
    assert not disagreements, disagreements
    failed = {(c.quantity, c.subject) for c in report.failures if c.kind == "target"}
    if param in ("spectral", "mup"):
        assert report.passed and report.exit_code == 0, present.summary(report)
        assert "PASS" in present.summary(report)
    else:
        assert report.exit_code == 1
        assert MUST_FAIL[(param, opt)] <= failed, failed
        for _, subject in MUST_FAIL[(param, opt)]:
            assert subject in present.summary(report) or subject in str(report.checks)


def _manual(derivation, at, seed, batch, steps, lr):
    """The same run as measure_width, written out directly."""
    torch.manual_seed(seed)
    model = build(derivation, at, factory=None, device=torch.device("cpu"))
    run = apply_parametrization(derivation, model, at, lr=lr)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    features = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: features.__setitem__(n, o.detach())) for n in ("fc1", "fc2", "head")]
    f0 = model(batch.x).detach()
    h0 = dict(features)
    for _ in range(steps):
        loss = batch.loss_value(model(batch.x) - f0)
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
    model(batch.x)
    for h in hooks:
        h.remove()
    dw = {n: p.detach() - w0[n] for n, p in model.named_parameters()}
    return w0, dw, h0, features


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_measurements_against_direct_computation(opt):
    d = paramcalc.derive(paper_mlp(), "mup", opt)
    at = {"n0": 3072, "d": 96, "n_out": 1}
    batch = make_batch(data="synthetic", loss="mse", batch=16, n_in=3072, n_out=1, sparse=False, seed=5)
    lr = 1e-3 if opt == "sgd" else 1e-4
    m = measure_width(d, at, 5, batch, RunSettings(opt, lr, 2))
    w0, dw, h0, h = _manual(d, at, 5, batch, 2, lr)
    for name in ("fc1.weight", "fc2.weight"):
        svd0 = float(torch.linalg.svdvals(w0[name].double())[0])
        svd = float(torch.linalg.svdvals(dw[name].double())[0])
        assert m.values[("spectral_norm", name, 0)] == pytest.approx(svd0, rel=0.01)
        assert m.values[("update_norm", name, 2)] == pytest.approx(svd, rel=0.01)
        fro = float(dw[name].norm())
        assert m.values[("stable_rank", name, 2)] == pytest.approx(fro**2 / svd**2, rel=0.03)
        relative = fro / float(w0[name].norm())
        assert m.values[("relative_frobenius", name, 2)] == pytest.approx(relative, rel=1e-4)
    for layer in ("fc1", "fc2"):
        assert m.values[("rms_h", layer, 0)] == pytest.approx(float(h0[layer].pow(2).mean().sqrt()), rel=1e-5)
        change = h[layer] - h0[layer]
        assert m.values[("rms_dh", layer, 2)] == pytest.approx(float(change.pow(2).mean().sqrt()), rel=1e-4)
        eq23 = float((change.norm(dim=1) / h0[layer].norm(dim=1)).mean())
        assert m.values[("feature_change", layer, 2)] == pytest.approx(eq23, rel=1e-4)
    # Eq. 24 at the readout with its current weight: ||W h'|| / (||W||_* ||h'||), h' = relu(h_2).
    w3 = w0["head.weight"] + dw["head.weight"]
    x = torch.relu(h["fc2"])
    eq24 = float(((x @ w3.T).norm(dim=1) / (w3.norm() * x.norm(dim=1))).mean())
    assert m.values[("alignment", "head", 2)] == pytest.approx(eq24, rel=1e-4)


def test_forms_related_by_the_abc_symmetry_measure_the_same():
    """muP table8 (output multiplier 256/d, applied by the emitted forward hooks) trains exactly as
    table3 under SGD: every measurement of the effective weights agrees."""
    kw = dict(widths=[64, 128], seeds=1, steps=2, device="cpu", lr=1e-3)
    a = verify(EXAMPLES / "mlp.yaml", "mup", "sgd", **kw)
    b = verify(EXAMPLES / "mlp.yaml", "mup", "sgd", form="table8", **kw)
    assert a.form == "table3" and b.form == "table8"
    for ma, mb in zip(a.measurements, b.measurements):
        for key, value in ma.values.items():
            assert mb.values[key] == pytest.approx(value, rel=2e-3, abs=1e-9), key


def test_divergence_is_a_finding_not_a_crash():
    report = verify(paper_mlp(), "sp", "sgd", widths=[64, 128, 256], seeds=1, steps=3, lr=5.0, device="cpu")
    assert report.exit_code == 1
    assert any("diverged" in f for f in report.findings)
    assert any(m.diverged_at is not None for m in report.measurements)
    json.dumps(present.to_json(report))  # NaN/inf never reach the JSON


def test_a_width_that_does_not_fit_is_skipped(monkeypatch):
    monkeypatch.setattr(model_module, "available_memory", lambda device: 6 * 2**20)
    report = verify(paper_mlp(), "mup", "adam", widths=[32, 64, 1024], seeds=2, steps=2, device="cpu")
    assert [at["d"] for at in report.widths] == [32, 64]
    assert len(report.skipped) == 1 and "d = 1024" in report.skipped[0] and "GiB" in report.skipped[0]


FACTORY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, widths, names=("fc1", "fc2", "head")):
        super().__init__()
        n0, d, k = widths["n0"], widths["d"], widths["n_out"]
        for name, (i, o) in zip(names, ((n0, d), (d, d), (d, k))):
            self.add_module(name, nn.Linear(i, o, bias=False))
        self.names = names

    def forward(self, x):
        a, b, c = (getattr(self, n) for n in self.names)
        return c(torch.tanh(b(torch.tanh(a(x)))))

def build(widths):
    return Net(widths)

def misnamed(widths):
    return Net(widths, names=("first", "fc2", "head"))
'''


def test_user_factory(tmp_path, monkeypatch):
    (tmp_path / "verify_factory_mod.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = paper_mlp(n0=64, n_out=10)
    spec["activation"] = "tanh"
    report = verify(spec, "mup", "sgd", widths=[64, 128, 256], seeds=2, steps=2,
                    model="verify_factory_mod:build", device="cpu")
    # Nothing fails; 64..256 spans 4x, too little for a verdict (paramcalc.verify.evidence).
    assert report.emitted and report.checks and not report.failures, present.summary(report)
    assert report.verdict == "inconclusive" and report.exit_code == 3
    with pytest.raises(FactoryError, match="fc1.weight") as exc:
        verify(spec, "mup", "sgd", widths=[64, 128], seeds=1, model="verify_factory_mod:misnamed")
    assert "submodule paths" in str(exc.value)
    with pytest.raises(FactoryError, match="cannot import"):
        verify(spec, "mup", "sgd", widths=[64, 128], seeds=1, model="no_such_module_xyz:build")
    sys.modules.pop("verify_factory_mod", None)


def test_digits_and_cross_entropy():
    report = verify(paper_mlp(n0=64, n_out=10), "mup", "adam", widths=[64, 128, 256], seeds=2, steps=2,
                    data="digits", loss="ce", batch=64, device="cpu")
    assert report.data == "digits" and report.loss == "ce"
    disagreements = [c for c in report.failures if c.kind == "agreement"]
    assert report.checks and not disagreements, present.summary(report)
    batch = make_batch(data="digits", loss="mse", batch=100, n_in=64, n_out=1, sparse=False, seed=0)
    assert batch.x.shape == (100, 64) and set(batch.y.flatten().tolist()) == {-1.0, 1.0}
    assert batch.x.norm(dim=1).mean() == pytest.approx(8.0, rel=1e-4)  # ||x|| = sqrt(64)
    with pytest.raises(UsageError, match="64 dense features"):
        verify(paper_mlp(), "mup", "sgd", widths=[32, 64], data="digits")


def test_synthetic_inputs_have_the_papers_norm():
    batch = make_batch(data="synthetic", loss="mse", batch=8, n_in=3072, n_out=2, sparse=False, seed=1)
    assert torch.allclose(batch.x.norm(dim=1), torch.full((8,), 3072**0.5))
    ids = make_batch(data="synthetic", loss="ce", batch=8, n_in=1000, n_out=20, sparse=True, seed=1)
    assert ids.x.dtype == torch.long and ids.y.max() < 20


def test_transformer_is_measured_and_judged_without_predictions():
    spec = {
        "name": "tiny-gpt",
        "widths": {"vocab": 50, "ctx": 16, "d_model": {"base": 32}, "n_heads": {"base": 2}, "d_head": 16,
                   "n_layers": 1},
        "activation": "gelu",
        "layers": [
            {"name": "wte", "kind": "embedding", "vocab": "vocab", "dim": "d_model"},
            {"name": "blocks", "repeat": "n_layers", "layers": [
                {"name": "ln_1", "kind": "layernorm", "dim": "d_model"},
                {"name": "attn", "kind": "attention", "d_model": "d_model", "n_heads": "n_heads",
                 "d_head": "d_head"},
                {"name": "ln_2", "kind": "layernorm", "dim": "d_model"},
                {"name": "mlp", "kind": "mlp", "d_model": "d_model"},
            ]},
            {"name": "ln_f", "kind": "layernorm", "dim": "d_model"},
            {"name": "lm_head", "fan_in": "d_model", "fan_out": "vocab"},
        ],
    }
    report = verify(spec, "mup", "adam", widths=[32, 64, 128], seeds=3, steps=2, lr=1e-3, loss="ce",
                    device="cpu")
    assert report.scaling is not None and report.scaling.loss == "local" and "chains" in report.notes[0]
    assert "No prediction for this architecture" in report.notes[0] and not report.lr_auto
    checked = {(c.kind, c.quantity, c.subject) for c in report.checks}
    assert ("target", "update_norm", "blocks.0.attn.q.weight") in checked
    # Per-tensor predictions only: the init norms, exact at any width (Rudelson & Vershynin).
    assert ("agreement", "spectral_norm", "wte.weight") in checked
    assert {q for kind, q, _ in checked if kind == "agreement"} == {"spectral_norm"}
    assert all(c.passed for c in report.checks if c.kind == "agreement")
    # Without --lr, the learning rate is calibrated by probe steps (no calculus for a transformer).
    auto = verify(spec, "mup", "adam", widths=[32, 64], seeds=1, steps=1, device="cpu")
    assert auto.lr_auto and auto.calibration is not None and "probe" in present.lr_source(auto)


def test_bad_input():
    with pytest.raises(UsageError, match="two different widths"):
        verify(paper_mlp(), widths=[64, 64])
    with pytest.raises(UsageError, match="steps"):
        verify(paper_mlp(), widths=[32, 64], steps=0)
    with pytest.raises(UsageError, match="parametrization"):
        verify(paper_mlp(), "mu", widths=[32, 64])
    with pytest.raises(UsageError, match="cross-entropy needs at least 2 outputs"):
        verify(paper_mlp(), widths=[32, 64], loss="ce")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            verify(paper_mlp(), widths=[32, 64], device="cuda")


def test_report_outputs(tmp_path):
    from paramcalc.verify.plot import plot_report
    from paramcalc.verify.present import report_table

    report = verify(paper_mlp(), "ntp", "sgd", widths=[32, 64, 128], seeds=3, steps=2, device="cpu")
    data = json.loads(json.dumps(present.to_json(report)))
    assert data["exit_code"] == 1 and data["parametrization"] == "ntp" and data["centered"] is True
    assert data["sweep"]["values"] == [32, 64, 128]
    fc2 = data["quantities"]["fc2"]["rms_dh"]
    assert fc2["predicted_exponent"] == "-1/2" and len(fc2["steps"]["2"]["values"]) == 3
    assert any(c["subject"] == "fc2" and not c["passed"] for c in data["checks"])
    path = plot_report(report, tmp_path / "ntp.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntp.png"]  # written atomically, no leftovers
    table = report_table(report)
    assert table.row_count > 10 and math.isfinite(report.lr)


def test_one_hot_chain_and_single_seed_is_inconclusive():
    """A first linear layer fed token ids (``input: sparse``): paramcalc.models indexes its weight
    rather than calling it, and the verifier reproduces that computation for its features."""
    spec = {"name": "tokens", "widths": {"vocab": 500, "d": {"base": 64}, "k": 10},
            "layers": [{"name": "emb", "fan_in": "vocab", "fan_out": "d", "input": "sparse"},
                       {"name": "fc", "fan_in": "d", "fan_out": "d"},
                       {"name": "head", "fan_in": "d", "fan_out": "k"}]}
    ok = verify(spec, "mup", "adam", widths=[64, 128, 256, 512], seeds=3, steps=2, loss="ce", device="cpu")
    assert not ok.failures, present.summary(ok)
    assert ("rms_dh", "emb", 2) in ok.slopes
    bad = verify(spec, "ntp", "adam", widths=[64, 128, 256], seeds=3, steps=2, loss="ce", device="cpu")
    assert ("rms_dh", "head") in {(c.quantity, c.subject) for c in bad.failures}
    # One seed and two widths: no uncertainty estimate and no span, so nothing passes as evidence.
    one = verify(spec, "mup", "adam", widths=[64, 128], seeds=1, steps=1, loss="ce", device="cpu")
    assert one.verdict != "pass" and all(c.evidence for c in one.checks if c.passed)
    assert one.inconclusive and "2 widths (at least 3)" in one.inconclusive[0].evidence


def test_emitted_code_is_never_another_derivations():
    """verify runs the emitted code of the derivation it is given. A cache keyed by ``id()`` once
    handed a derivation made right after another was freed (at the freed one's address) the
    earlier one's code: wrong init, learning rates and multipliers, now and then, in any long
    process (this test suite, a notebook calling verify repeatedly)."""
    from paramcalc.engine import Derivation
    from paramcalc.verify.model import emitted_namespace

    ntp = paramcalc.derive(paper_mlp(), "ntp", "sgd")
    for _ in range(20):
        mup = paramcalc.derive(paper_mlp(), "mup", "sgd")
        assert emitted_namespace(mup)["PARAMETRIZATION"] == "mup"
        del mup
        # Allocated at once, the copy often takes the freed derivation's address.
        copy = Derivation(ntp.spec, ntp.parametrization, ntp.optimizer, ntp.form, ntp, ntp.constants,
                          ntp.tied)
        assert emitted_namespace(copy)["PARAMETRIZATION"] == "ntp"
