"""verify across depth: alpha = 1 and 1/2 meet their slopes in L, no depth scaling fails, naming blocks.

Each run trains the small GPT of examples/gpt_depth.yaml at depths 2, 4, 8 (and 16 for the command
line) on a CPU in seconds; nothing here is asserted that the training did not measure.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from paramcalc.cli import app
from paramcalc.verify.depth import verify_depth

GPT = "examples/gpt_depth.yaml"
FAST = {"steps": 2}  # and the default 6 seeds: a verdict needs the evidence bar (paramcalc.verify.evidence)


# Where each rule is asymptotic on this model (docs/verify.md, "Across depth"): depth-muP from L = 2
# under Adam; SGD's step carries the final norm's 1/RMS(stream), which settles deeper. CompleteP's
# stream change falls like L^-0.2 up to L ~ 64 (the blocks' incoherent share of it fading), flat from
# L ~ 128: it is judged at 32..256.
@pytest.mark.parametrize(("optimizer", "depths", "alpha", "seeds"), [
    ("adam", [2, 4, 8, 16], 0.5, 6),
    ("sgd", [8, 16, 32, 64], 0.5, 8),
    pytest.param("adam", [32, 64, 128, 256], 1, 6, marks=pytest.mark.slow),
])
def test_depth_rules_pass_their_own_checks(optimizer, depths, alpha, seeds):
    report = verify_depth(GPT, "mup", optimizer, depths=depths,
                          options={"depth_alpha": alpha, **FAST, "seeds": seeds})
    assert report.passed, "\n".join(c.message for c in report.failures + report.inconclusive)
    by = {(c.quantity, c.subject, c.step): c for c in report.checks}
    # What was measured follows the rule, not just "within tolerance of something":
    assert by[("block_init", "blocks[first]", 0)].slope.value == pytest.approx(-alpha, abs=0.1)
    assert by[("block_change", "blocks[first]", 1)].slope.value == pytest.approx(-1, abs=0.15)


def test_no_depth_scaling_fails_and_names_the_blocks():
    report = verify_depth(GPT, "mup", "adam", depths=[2, 4, 8, 16], options={"depth_alpha": "none", **FAST})
    assert not report.passed
    failed = {(c.quantity, c.subject) for c in report.failures}
    assert ("dstream", "the stream") in failed and ("stream", "the stream") in failed
    assert {("block_change", f"blocks[{pos}]") for pos in ("first", "middle", "last")} <= failed
    # Each block's own change is Theta(1) without the depth factors: slope ~0, not -1.
    change = next(c for c in report.checks if c.quantity == "block_change" and c.step == 1)
    assert abs(change.slope.value) < 0.3


def test_widths_swept_too():
    """Each width of a sweep is its own depth sweep: at d_model = 64 the same slopes as alone."""
    options = {"depth_alpha": 0.5, "steps": 1, "seeds": 3}
    both = verify_depth(GPT, "mup", "adam", depths=[2, 4, 8], options={"widths": [64, 128], **options})
    alone = verify_depth(GPT, "mup", "adam", depths=[2, 4, 8], options={"widths": [64], **options})
    subjects = {c.subject for c in both.checks}
    assert "blocks[last] at d_model=128" in subjects and "the stream at d_model=64" in subjects
    at_64 = {(c.quantity, c.subject.removesuffix(" at d_model=64"), c.step): c.slope.value
             for c in both.checks if c.subject.endswith("at d_model=64")}
    assert at_64 == pytest.approx({(c.quantity, c.subject, c.step): c.slope.value for c in alone.checks})


def test_command_line_exit_codes_json_and_plot(tmp_path):
    runner = CliRunner()
    out, fig = tmp_path / "depth.json", tmp_path / "depth.png"
    ok = runner.invoke(app, ["verify", GPT, "--depths", "2,4,8,16", "--param", "mup", "--optimizer", "adam",
                             "--depth-alpha", "0.5", "--steps", "2", "--json", str(out), "--plot", str(fig)])
    assert ok.exit_code == 0, ok.output
    assert "PASS: all" in ok.output
    data = json.loads(out.read_text())
    assert data["passed"] and data["depth_alpha"] == "1/2" and data["depths"] == [2, 4, 8, 16]
    assert {c["verdict"] for c in data["checks"]} == {"pass"} and data["exit_code"] == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, ["verify", GPT, "--depths", "2,4,8,16", "-p", "mup", "--optimizer", "adam",
                              "--depth-alpha", "none"])
    assert bad.exit_code == 1 and "FAIL:" in bad.output and "blocks[last]" in bad.output


@pytest.mark.parametrize(("args", "reason"), [
    (["--depths", "2,4,8"], "widen --depths"),  # a span of 4x
    (["--depths", "2,4,8,16", "--seeds", "2"], "add --seeds"),  # t95 = 12.7 on one degree of freedom
])
def test_too_little_evidence_is_inconclusive(args, reason):
    """The sweeps the depth tests passed on before the evidence bar: nothing fails, nothing counts."""
    result = CliRunner().invoke(app, ["verify", GPT, *args, "-p", "mup", "--optimizer", "adam",
                                      "--depth-alpha", "0.5", "--steps", "1"])
    assert result.exit_code == 3, result.output
    assert "INCONCLUSIVE (exit 3)" in result.output and reason in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["examples/mlp.yaml", "--depths", "2,4"], "needs a repeat whose count scales"),
    ([GPT, "--depths", "2,x"], "--depths: expected positive integers"),
    ([GPT, "--depths", "4"], "at least two positive block counts"),
    ([GPT, "--depths", "4,6"], "span at least a factor 2"),
    ([GPT, "--depths", "2,4", "--depth-alpha", "0.3"], "from 1/2 to 1"),
    ([GPT, "--depths", "2,4", "--decay-check"], "--depths and --decay-check are two different runs"),
])
def test_bad_depth_options_are_usage_errors(args, message):
    result = CliRunner().invoke(app, ["verify", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
