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
FAST = {"seeds": 2, "steps": 2}


# SGD's step carries the gradient's size, and with it the final norm's 1/RMS(stream): where the
# stream's RMS still changes with L (alpha = 1 below L ~ 16, docs/verify.md) so does ||dW||_*. Adam
# normalises it away; SGD is measured deeper, where the stream has settled.
@pytest.mark.parametrize(("optimizer", "depths"), [("adam", [2, 4, 8]), ("sgd", [8, 16, 32])])
@pytest.mark.parametrize("alpha", [1, 0.5])
def test_depth_rules_pass_their_own_checks(optimizer, depths, alpha):
    report = verify_depth(GPT, "mup", optimizer, depths=depths, options={"depth_alpha": alpha, **FAST})
    assert report.passed, "\n".join(c.message for c in report.failures)
    by = {(c.quantity, c.subject, c.step): c for c in report.checks}
    # What was measured follows the rule, not just "within tolerance of something":
    assert by[("block_init", "blocks[first]", 0)].slope.value == pytest.approx(-alpha, abs=0.1)
    assert by[("block_change", "blocks[first]", 1)].slope.value == pytest.approx(-1, abs=0.15)


def test_no_depth_scaling_fails_and_names_the_blocks():
    report = verify_depth(GPT, "mup", "adam", depths=[2, 4, 8], options={"depth_alpha": "none", **FAST})
    assert not report.passed
    failed = {(c.quantity, c.subject) for c in report.failures}
    assert ("dstream", "the stream") in failed and ("stream", "the stream") in failed
    assert {("block_change", f"blocks[{pos}]") for pos in ("first", "middle", "last")} <= failed
    # Each block's own change is Theta(1) without the depth factors: slope ~0, not -1.
    change = next(c for c in report.checks if c.quantity == "block_change" and c.step == 1)
    assert abs(change.slope.value) < 0.3


def test_widths_swept_too():
    report = verify_depth(GPT, "mup", "adam", depths=[2, 4, 8], options={"widths": [64, 128], **FAST})
    subjects = {c.subject for c in report.checks}
    assert "blocks[last] at d_model=128" in subjects and "the stream at d_model=64" in subjects
    assert report.passed, "\n".join(c.message for c in report.failures)


def test_command_line_exit_codes_json_and_plot(tmp_path):
    runner = CliRunner()
    out, fig = tmp_path / "depth.json", tmp_path / "depth.png"
    ok = runner.invoke(app, ["verify", GPT, "--depths", "2,4,8,16", "--param", "mup", "--optimizer", "adam",
                             "--json", str(out), "--plot", str(fig)])
    assert ok.exit_code == 0, ok.output
    assert "PASS: all" in ok.output
    data = json.loads(out.read_text())
    assert data["passed"] and data["depth_alpha"] == "1" and data["depths"] == [2, 4, 8, 16]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, ["verify", GPT, "--depths", "2,4,8,16", "-p", "mup", "--optimizer", "adam",
                              "--depth-alpha", "none"])
    assert bad.exit_code == 1 and "FAIL:" in bad.output and "blocks[last]" in bad.output


@pytest.mark.parametrize(("args", "message"), [
    (["examples/mlp.yaml", "--depths", "2,4"], "needs a repeat whose count scales"),
    ([GPT, "--depths", "2,x"], "--depths: expected positive integers"),
    ([GPT, "--depths", "4"], "at least two positive block counts"),
    ([GPT, "--depths", "4,6"], "span at least a factor 2"),
    ([GPT, "--depths", "2,4", "--depth-alpha", "0.3"], "from 1/2 to 1"),
    ([GPT, "--depths", "2,4", "--decay-check"], "without --decay-check"),
])
def test_bad_depth_options_are_usage_errors(args, message):
    result = CliRunner().invoke(app, ["verify", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
