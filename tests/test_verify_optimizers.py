"""``paramcalc verify`` per optimizer: AdamW, Lion and Muon (both ``adjust_lr_fn``) keep the paper's
conditions under muP and spectral; Muon trained with ``match_rms_adamw`` on factors derived for
``original`` does not, and says where; weight decay's effect over many steps is measured per width.

Widths are small (32..256 for the MLP, 32..128 for the two-block GPT) so that the file runs in well
under a minute on a CPU; ``benchmarks/RESULTS.md`` has the same verdicts at the default widths.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("torch")

from paramcalc.cli import app  # noqa: E402
from paramcalc.errors import UsageError  # noqa: E402
from paramcalc.verify import present, verify  # noqa: E402
from paramcalc.verify.config import VerifyConfig  # noqa: E402
from paramcalc.verify.decay import check_decay  # noqa: E402
from tests.conftest import EXAMPLES, holds, paper_mlp, small_gpt  # noqa: E402

pytestmark = pytest.mark.slow

MLP = EXAMPLES / "mlp.yaml"
WIDTHS = (32, 64, 128, 256)
TINY_GPT = small_gpt("tiny-gpt", vocab=64, ctx=8, d_model_base=32, heads_base=2, d_head=16,
                     n_layers=2, embedding_gain=0.02)
OPTIMIZERS = [("adamw", {}), ("lion", {}), ("muon", {"muon_adjust": "original"}),
              ("muon", {"muon_adjust": "match_rms_adamw"})]


def _failed(report) -> set[tuple[str, str]]:
    return {(c.quantity, c.subject) for c in report.failures}


@pytest.mark.parametrize(("opt", "options"), OPTIMIZERS)
@pytest.mark.parametrize("param", ["mup", "spectral"])
def test_each_optimizer_passes_on_the_mlp(param, opt, options):
    report = verify(MLP, param, opt, widths=WIDTHS, seeds=3, steps=2, device="cpu", **options)
    assert report.emitted
    assert holds(report) and report.exit_code in (0, 3), present.summary(report)
    disagreements = [c.message for c in report.checks if c.kind == "agreement" and not c.passed]
    assert not disagreements, disagreements


@pytest.mark.parametrize(("opt", "options"), OPTIMIZERS)
@pytest.mark.parametrize("param", ["mup", "spectral"])
def test_each_optimizer_passes_on_a_gpt(param, opt, options):
    report = verify(TINY_GPT, param, opt, widths=(32, 64, 128), steps=2, device="cpu", **options)
    assert holds(report) and report.exit_code in (0, 3), present.summary(report)


def test_muon_mismatch_on_a_gpt_names_the_hidden_matrices():
    report = verify(TINY_GPT, "mup", "muon", widths=(32, 64, 128), steps=2, device="cpu",
                    muon_adjust="original", train_adjust="match_rms_adamw")
    assert report.exit_code == 1
    grown = {c.subject for c in report.failures if c.quantity == "update_norm"}
    # every Muon-trained matrix of both blocks (queries, keys, values, output, MLP up and down)
    hidden = {f"blocks.{i}.{m}.weight" for i in (0, 1)
              for m in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.fc", "mlp.proj")}
    assert grown == hidden, grown
    assert all(0.3 < c.measured.value < 0.7 for c in report.failures
               if c.quantity == "update_norm" and c.subject in hidden)


def test_muon_trained_with_the_other_adjust_fails_on_the_hidden_update():
    """Factors for ``original`` (no width scaling of a square matrix's lr), trained with
    ``match_rms_adamw``, whose shape factor ``0.2 sqrt(max(A, B))`` grows like ``n^1/2``."""
    report = verify(MLP, "mup", "muon", widths=WIDTHS, seeds=3, steps=2, device="cpu",
                    muon_adjust="original", train_adjust="match_rms_adamw")
    assert report.exit_code == 1
    assert ("update_norm", "fc2.weight") in _failed(report)
    check = next(c for c in report.failures if (c.quantity, c.subject) == ("update_norm", "fc2.weight"))
    assert 0.35 < check.measured.value < 0.65, check.message
    assert "fc2.weight" in check.message
    assert any("deliberate mismatch" in note for note in report.notes)


def test_muon_on_the_papers_mlp_agrees_with_the_calculus_per_example():
    """One output, no biases: at batch 1, the calculus' own regime, every prediction holds; at a
    larger batch verify says why Muon's constants may differ (docs/verify.md, "Muon and the batch")."""
    report = verify(paper_mlp(), "spectral", "muon", widths=WIDTHS, seeds=4, steps=2, batch=1, device="cpu")
    assert holds(report), present.summary(report)
    assert not any("Muon with a batch" in n for n in report.notes)
    batched = verify(paper_mlp(), "spectral", "muon", widths=(32, 64), seeds=1, steps=1, device="cpu")
    assert any("Muon with a batch of 32" in n for n in batched.notes)


def test_adamw_with_weight_decay_over_many_steps_passes():
    report = verify(MLP, "mup", "adamw", widths=WIDTHS, seeds=2, steps=20, device="cpu", weight_decay=0.1)
    assert holds(report), present.summary(report)


def _decay(policy: str, optimizer: str = "adamw", steps: int = 20):
    config = VerifyConfig("mup", optimizer, widths=WIDTHS, steps=steps, seeds=1, device="cpu",
                          weight_decay=0.1, weight_decay_policy=policy)
    return check_decay(MLP, config)


def test_independent_decay_is_width_independent_and_coupled_fades():
    independent = _decay("independent")
    assert independent.passed
    assert {c.tensor for c in independent.checks} == {"fc1.weight", "fc2.weight", "head.weight"}
    assert all(c.width_independent and c.expected == 0 for c in independent.checks)
    coupled = {c.tensor: c for c in _decay("coupled").checks}
    # Under muP with AdamW the hidden and readout lr go like 1/m, and with them coupled decay.
    for name in ("fc2.weight", "head.weight"):
        assert coupled[name].expected == -1
        assert abs(coupled[name].slope.value + 1) < 0.15 and not coupled[name].width_independent
    assert coupled["fc1.weight"].width_independent  # the input layer's lr does not scale


@pytest.mark.parametrize("optimizer", ["lion", "muon"])
def test_decay_is_width_independent_for_lion_and_muon(optimizer):
    report = _decay("independent", optimizer, steps=10)
    assert report.passed and all(c.width_independent for c in report.checks), report.text()


def test_decay_check_refuses_adam_and_no_decay():
    with pytest.raises(UsageError, match="adamw"):
        check_decay(MLP, VerifyConfig("mup", "adam", widths=WIDTHS, weight_decay=0.1))
    with pytest.raises(UsageError, match="weight"):
        check_decay(MLP, VerifyConfig("mup", "adamw", widths=WIDTHS, weight_decay=0.0))


runner = CliRunner()
FAST = ["--widths", "32,64", "--steps", "2", "--seeds", "1", "--device", "cpu"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "muon", "--muon-adjust", "sideways"], "--muon-adjust"),
        (["--optimizer", "adamw", "--train-adjust", "original"], "--train-adjust"),
        (["--optimizer", "adamw", "--decay-policy", "sometimes"], "--decay-policy"),
        (["--optimizer", "adamw", "--decay", "weight,everything"], "--decay: expected tensor kinds"),
        (["--optimizer", "adam", "--decay-check"], "check adamw"),
    ],
)
def test_bad_optimizer_options_exit_2(args, message):
    result = runner.invoke(app, ["verify", str(MLP), *FAST, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_cli_decay_check(tmp_path):
    out = tmp_path / "decay.json"
    result = runner.invoke(app, ["verify", str(MLP), "-p", "mup", "--optimizer", "adamw", "--decay-check",
                                 "--widths", "32,64,128", "--steps", "10", "--seeds", "1", "--device", "cpu",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "width-independent" in result.stdout and "fc2.weight" in result.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and {c["tensor"] for c in data["checks"]} >= {"fc2.weight"}


def test_derive_json_carries_the_factors(tmp_path):
    spec = tmp_path / "mlp.yaml"
    spec.write_text(yaml.safe_dump(paper_mlp(), sort_keys=False))
    result = runner.invoke(app, ["derive", str(spec), "-p", "mup", "--optimizer", "muon",
                                 "--muon-adjust", "match_rms_adamw", "--emit", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["muon_adjust"] == "match_rms_adamw" and data["weight_decay"] == "independent"
    assert data["factors"]["fc2.weight"]["optimizer"] == "muon"
    assert data["factors"]["head.weight"]["optimizer"] == "adamw"
    assert set(data["params"]["fc2.weight"]) == {"init_std", "lr", "multiplier"}
