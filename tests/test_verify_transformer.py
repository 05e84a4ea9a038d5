"""``paramcalc verify`` on transformers: targets without a calculus, attention logits, tied readout,
tensors without a gradient, and the learning rate calibrated by probe steps.

A two-block GPT with a 64-token vocabulary, ``d_head`` fixed and heads scaling with ``d_model``
(as GPT-2's family does), widths 32..128: small enough for a CPU in seconds, and wide against the
default batch (2 sequences of 2 tokens), the regime the theory describes. The verdicts are
measured, not assumed: muP with Adam keeps every target, SP with Adam makes hidden updates and the
attention logits grow with width (its constant learning rate gives ``||dW||_* ~ n``).
"""

from __future__ import annotations

import copy
import json
import math

import pytest

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.verify import (  # noqa: E402
    measure_width,
    present,  # noqa: E402
    verify,
)
from paramcalc.verify.calibrate import calibrate_lr  # noqa: E402
from paramcalc.verify.config import AUTO_FEATURE_CHANGE  # noqa: E402
from paramcalc.verify.data import make_batch  # noqa: E402
from paramcalc.verify.measure import RunSettings  # noqa: E402
from paramcalc.verify.model import apply_parametrization, build  # noqa: E402
from paramcalc.verify.observe import grouped_rms  # noqa: E402
from paramcalc.verify.present import report_table  # noqa: E402
from paramcalc.verify.probe import ZERO_GRADIENT, zero_gradient  # noqa: E402
from paramcalc.verify.widths import sweep  # noqa: E402
from tests.conftest import holds, small_gpt  # noqa: E402

pytestmark = pytest.mark.slow

WIDTHS = [32, 64, 128]

TINY_GPT = small_gpt("tiny-gpt", vocab=64, ctx=8, d_model_base=32, heads_base=2, d_head=16,
                     n_layers=2, embedding_gain=0.02)
KEY_BIASES = {"blocks.0.attn.k.bias", "blocks.1.attn.k.bias"}


@pytest.fixture(scope="module")
def mup_adam():
    return verify(TINY_GPT, "mup", "adam", widths=WIDTHS, steps=2, device="cpu")  # 6 seeds: the default


@pytest.fixture(scope="module")
def sp_adam():
    return verify(TINY_GPT, "sp", "adam", widths=WIDTHS, steps=2, device="cpu")


def test_mup_adam_keeps_every_target(mup_adam):
    report = mup_adam
    assert holds(report) and report.exit_code in (0, 3), present.summary(report)
    assert "none for this architecture" in present.to_json(report)["predictions"]
    assert report.loss == "ce" and report.seq == 2 and report.batch == 2  # the sequence defaults
    assert len(report.seeds) == 6 and report.dtype == "float64"
    judged = {(c.quantity, c.subject) for c in report.checks if c.kind == "target"}
    # Every family of target is judged: projections, norms, the stream, logits, the tied use.
    for key in [("rms_dh", "blocks.1.attn.q"), ("rms_dh", "blocks.0.ln_2"), ("rms_dstream", "ln_f"),
                ("rms_logits", "blocks.1.attn"), ("rms_dlogits", "blocks.0.attn"),
                ("update_norm", "blocks.0.mlp.fc.weight"), ("update_norm", "wte.weight"),
                ("spectral_norm", "lm_head.weight"), ("update_norm", "lm_head.weight"),
                ("rms_dwh", "lm_head")]:
        assert key in judged, key
    # The tied readout is held to the readout's Condition 1, sqrt(vocab / d_model): n^-1/2.
    tied = next(c for c in report.checks if (c.quantity, c.subject) == ("update_norm", "lm_head.weight"))
    assert tied.target == sympy_half(-1)
    # The output's whole change is judged from above only, its own-update term both ways.
    output = next(c for c in report.checks if (c.quantity, c.subject) == ("rms_dh", "lm_head"))
    assert output.upper and not next(c for c in report.checks if c.quantity == "rms_dwh").upper


def sympy_half(sign: int):
    import sympy

    return sympy.Rational(sign, 2)


def test_sp_adam_fails_with_hidden_updates_and_attention_logits(sp_adam):
    report = sp_adam
    assert report.exit_code == 1
    failed = {(c.quantity, c.subject) for c in report.failures if c.kind == "target"}
    # lr 1 for every tensor: ||dW||_* ~ n where Condition 1 asks 1, queries and keys included ...
    for tensor in ("blocks.0.attn.q.weight", "blocks.1.attn.k.weight", "blocks.0.mlp.fc.weight"):
        assert ("update_norm", tensor) in failed, tensor
    # ... so hidden features, the residual stream and the output's own-update term blow up ...
    assert ("rms_dh", "blocks.1.mlp.proj") in failed and ("rms_dstream", "ln_f") in failed
    assert ("rms_dwh", "lm_head") in failed
    # ... and so do the attention logits, which the queries' and keys' changes move.
    too_large = [c for c in report.failures if c.quantity == "rms_dlogits"]
    assert "blocks.0.attn" in {c.subject for c in too_large}
    assert all(c.measured.value > 0.1 and "blows up" in c.message for c in too_large)
    for text in ("RMS(d logits)", "blocks.0.attn", "||dW||_*", "RMS(dh)"):
        assert text in present.summary(report), text


def test_tensors_without_a_gradient_are_reported_not_judged(mup_adam, sp_adam):
    for report in (mup_adam, sp_adam):
        assert set(report.excluded) == KEY_BIASES
        assert all("softmax ignores q . b_k" in reason for reason in report.excluded.values())
        judged = {c.subject for c in report.checks}
        assert not KEY_BIASES & judged
        assert all(report.zero_gradients[name] < ZERO_GRADIENT for name in KEY_BIASES)
    # Measured all the same, and shown as excluded in the table.
    assert ("update_norm", "blocks.0.attn.k.bias", 2) in mup_adam.slopes
    rows = report_table(mup_adam).columns[-1]._cells
    assert any("excluded" in str(cell) for cell in rows)


def test_zero_gradient_probe_is_structural():
    """Exactly the key biases: not the query or value biases, and not a fused qkv bias, one third of
    which (the keys') gets no gradient while the tensor as a whole does."""
    d = paramcalc.derive(TINY_GPT, "mup", "adam")
    at = sweep(d.spec, [32, 64])
    batch = make_batch(data="synthetic", loss="ce", batch=2, n_in=64, n_out=64, sparse=True, seed=0, seq=2)
    found = zero_gradient(d, at, batch)
    assert set(found) == KEY_BIASES and all(v < 1e-12 for v in found.values())
    fused = copy.deepcopy(TINY_GPT)
    fused["layers"][2]["layers"][1]["fused"] = True
    assert zero_gradient(paramcalc.derive(fused, "mup", "adam"), sweep(paramcalc.load_spec(fused), [32]),
                         batch) == {}


def test_calibrated_lr_meets_its_target():
    """The probe's claim, checked by an independent run: one step at the calibrated lr moves the
    hidden feature that moves most by 10% of its RMS (geometric mean over seeds) at the smallest
    width; and Adam's first step is linear in lr, which is what makes a probe enough."""
    d = paramcalc.derive(TINY_GPT, "mup", "adam")
    at = sweep(d.spec, [32])[0]
    batches = {s: make_batch(data="synthetic", loss="ce", batch=2, n_in=64, n_out=64, sparse=True, seed=s,
                             seq=2) for s in (0, 1)}
    cal = calibrate_lr(d, at, batches, "adam", target=AUTO_FEATURE_CHANGE)
    assert abs(cal.change / AUTO_FEATURE_CHANGE - 1) <= 0.1 and cal.lr in [p[0] for p in cal.probes]

    def largest(lr: float) -> tuple[float, list[str]]:
        """Per seed, the largest RMS(dh) / RMS(h) over hidden features; geometric mean over seeds."""
        logs, names = [], []
        for s, b in batches.items():
            v = measure_width(d, at, s, b, RunSettings("adam", lr, 1, structured=True)).values
            ratios = {(layer, init): v[(change, layer, 1)] / v[(init, layer, 0)]
                      for init, change in (("rms_h", "rms_dh"), ("rms_stream", "rms_dstream"))
                      for (q, layer, step) in v if q == init and layer != "lm_head"}
            (layer, _), value = max(ratios.items(), key=lambda kv: kv[1])
            logs.append(math.log(value))
            names.append(layer)
        return math.exp(sum(logs) / len(logs)), names

    value, layers = largest(cal.lr)
    assert value == pytest.approx(cal.change, rel=1e-3)
    assert cal.feature.split(" ")[0] in layers
    small = cal.lr / 8
    assert largest(2 * small)[0] / largest(small)[0] == pytest.approx(2.0, rel=0.05)


def test_report_json_has_attention_logits_and_the_lr_source(mup_adam):
    data = json.loads(json.dumps(present.to_json(mup_adam)))
    logits = data["quantities"]["blocks.0.attn"]
    assert set(logits) == {"rms_logits", "rms_dlogits"}
    values = logits["rms_dlogits"]["steps"]["2"]["values"]
    assert len(values) == 6 and all(len(row) == 3 and all(v > 0 for v in row) for row in values)
    check = next(c for c in data["checks"]
                 if c["quantity"] == "rms_logits" and c["subject"] == "blocks.1.attn")
    assert check["target"] == "0" and "TP5 Def. 4.1" in check["message"]
    assert data["lr_auto"] and data["lr_calibration"]["target_feature_change"] == AUTO_FEATURE_CHANGE
    assert "probe" in data["lr_source"] and data["seq"] == 2
    assert {e["tensor"] for e in data["excluded"]} == KEY_BIASES
    assert data["predictions"].startswith("none for this architecture")
    bounds = {(c["quantity"], c["subject"]): c["bound"] for c in data["checks"] if c["kind"] == "target"}
    assert bounds[("rms_dh", "lm_head")] == "upper" and bounds[("rms_dwh", "lm_head")] == "two-sided"


def test_attention_scales_and_tied_multiplier_are_applied():
    """The derivation's logit scale reaches the model (spectral: 1/d_head, not torch's 1/sqrt(d_head)),
    and the tied readout's measured norm is the embedding's times its multiplier."""
    d = paramcalc.derive(TINY_GPT, "spectral", "adam")
    at = sweep(d.spec, [64])[0]
    torch.manual_seed(0)  # as measure_width does, so that both hold the same init
    model = build(d, at, factory=None, device=torch.device("cpu"))
    run = apply_parametrization(d, model, at, lr=1e-3)
    assert not run.unscaled
    assert model.get_submodule("blocks.1.attn").scale == pytest.approx(1 / 16)
    mu = d.evaluate_tied(at)["lm_head"]["multiplier"]
    assert run.tied == {"lm_head": pytest.approx(mu)} and mu == pytest.approx(1 / 64)  # Adam: 1/d_model
    batch = make_batch(data="synthetic", loss="ce", batch=2, n_in=64, n_out=64, sparse=True, seed=0, seq=2)
    m = measure_width(d, at, 0, batch, RunSettings("adam", 1e-3, 1, structured=True))
    assert m.values[("spectral_norm", "lm_head.weight", 0)] == pytest.approx(
        mu * m.values[("spectral_norm", "wte.weight", 0)], rel=1e-6)
    w = model.get_submodule("wte").weight.detach()
    assert m.values[("spectral_norm", "wte.weight", 0)] == pytest.approx(
        float(torch.linalg.svdvals(w.double())[0]), rel=0.01)


def test_next_token_targets_and_grouped_logit_rms():
    batch = make_batch(data="synthetic", loss="ce", batch=3, n_in=50, n_out=50, sparse=True, seed=4, seq=5)
    assert batch.x.shape == batch.y.shape == (3, 5) and torch.equal(batch.x[:, 1:], batch.y[:, :-1])
    other = make_batch(data="synthetic", loss="ce", batch=3, n_in=50, n_out=7, sparse=True, seed=4, seq=5)
    assert other.y.max() < 7  # not a language model: uniform classes
    logits = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(0))
    rms = [float(logits[:, i: i + 2].pow(2).mean().sqrt()) for i in (0, 2, 4)]
    assert grouped_rms(logits, 2) == pytest.approx(math.exp(sum(map(math.log, rms)) / 3), rel=1e-6)
    assert grouped_rms(logits, 6) == pytest.approx(float(logits.pow(2).mean().sqrt()), rel=1e-6)
    assert grouped_rms(logits[:, :5], 2) == pytest.approx(math.exp(sum(map(math.log, rms[:2])) / 2), rel=1e-6)


def test_a_factory_that_is_not_a_chain_gets_a_calibrated_lr(tmp_path, monkeypatch):
    """``--model`` with a transformer: the same probe calibrates the learning rate, and the
    attention scales reach the factory's modules."""
    (tmp_path / "tiny_gpt_factory.py").write_text(
        "from paramcalc.models import build_model\n"
        f"SPEC = {TINY_GPT!r}\n"
        "def build(widths):\n"
        "    return build_model(SPEC, widths)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    report = verify(TINY_GPT, "spectral", "sgd", widths=[32, 64], seeds=1, steps=1,
                    model="tiny_gpt_factory:build", device="cpu")
    assert report.lr_auto and report.calibration is not None
    assert report.calibration.widths["d_model"] == 32
    assert abs(report.calibration.change / AUTO_FEATURE_CHANGE - 1) <= 0.1
    assert not any("scale" in note for note in report.notes)
    assert ("rms_logits", "blocks.0.attn", 0) in report.slopes


def test_cli_on_a_transformer(tmp_path):
    """The command line's defaults for a transformer (no --lr, --batch, --loss, --seq) and its exit codes."""
    import yaml
    from typer.testing import CliRunner

    from paramcalc.cli import app

    spec = tmp_path / "tiny-gpt.yaml"
    spec.write_text(yaml.safe_dump(TINY_GPT))
    runner = CliRunner()
    fast = ["--widths", "32,64,128", "--steps", "2", "--device", "cpu"]
    out = tmp_path / "sp.json"
    result = runner.invoke(app, ["verify", str(spec), "--param", "sp", "--optimizer", "adam", *fast,
                                 "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "RMS(d logits)" in result.stdout and "probe steps" in result.stdout
    data = json.loads(out.read_text())
    assert data["loss"] == "ce" and data["batch"] == 2 and data["seq"] == 2 and data["lr_auto"]
    assert len(data["seeds"]) == 6 and data["dtype"] == "float64"
    result = runner.invoke(app, ["verify", str(spec), *fast, "--seq", "9"])
    assert result.exit_code == 2 and "8 positions" in result.stderr


def test_updates_below_float32_resolution_are_detected():
    """A first step far below the weights' float32 resolution is lost to rounding: the run says so
    (and float64, the default for transformers, keeps it)."""
    d = paramcalc.derive(TINY_GPT, "mup", "sgd")
    at = sweep(d.spec, [32])[0]
    batch = make_batch(data="synthetic", loss="ce", batch=2, n_in=64, n_out=64, sparse=True, seed=0, seq=2)
    lost = measure_width(d, at, 0, batch, RunSettings("sgd", 1e-9, 1, structured=True)).rounded
    assert "blocks.0.mlp.fc.weight" in lost and all(0.5 < v <= 1 for v in lost.values())
    kept = measure_width(d, at, 0, batch, RunSettings("sgd", 1e-9, 1, structured=True, dtype=torch.float64))
    assert not set(kept.rounded) - KEY_BIASES  # only the tensors without a gradient (rounding itself)
    report = verify(TINY_GPT, "mup", "sgd", widths=[32, 64], seeds=1, steps=1, lr=1e-9, dtype="float32",
                    device="cpu")
    assert any("lost to float32 rounding" in note and "--dtype float64" in note for note in report.notes)
