"""Tied tensors at finite width: each tied use's effective init and rate against its role's.

The figures are the issue's (spectral, Adam, V = 50257, d = 768): tied to the embedding, the
readout starts 1/sqrt(768) = 1/27.7 of its role's init; tied the other way, the embedding starts
27.7x its role's. Expected numbers are typed from the rules (spectral init ``1/sqrt(d_in) *
min(1, sqrt(fan_out/d_in))``, Adam lr ``1/d_in``; one-hot inputs count as width 1).
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import paramcalc
from paramcalc.cli import app
from tests.conftest import EXAMPLES

runner = CliRunner()


def lm(owner: str) -> dict:
    """A token embedding and a readout sharing one ``vocab x d`` table, ``owner`` declaring it."""
    wte = {"kind": "embedding", "name": "wte", "vocab": "vocab", "dim": "d"}
    head = {"name": "lm_head", "fan_in": "d", "fan_out": "vocab"}
    if owner == "wte":
        head["tie"] = "wte"
    else:
        wte["tie"] = "lm_head"
    return {"name": f"tied-{owner}", "widths": {"vocab": 50257, "d": {"base": 768}},
            "layers": [wte, {"name": "mix", "fan_in": "d", "fan_out": "d"}, head]}


def test_readout_tied_to_the_embedding_starts_below_its_role():
    gap = paramcalc.derive(lm("wte"), "spectral", "adam").tie_gaps()["lm_head"]
    assert (gap.owner, gap.role) == ("wte", "output")
    assert gap.rule_init_std == pytest.approx(1 / math.sqrt(768), rel=1e-12)  # min(1, sqrt(V/d)) = 1
    assert gap.init_std == pytest.approx(1 / 768, rel=1e-12)  # the embedding's 1, times mu = 1/d
    assert gap.init_ratio == pytest.approx(1 / math.sqrt(768), rel=1e-12)
    assert gap.lr == pytest.approx(1 / 768, rel=1e-12) and gap.lr_ratio == pytest.approx(1.0, rel=1e-12)


def test_embedding_tied_to_the_readout_starts_above_its_role():
    gap = paramcalc.derive(lm("lm_head"), "spectral", "adam").tie_gaps()["wte"]
    assert (gap.owner, gap.role) == ("lm_head", "input")
    assert gap.init_std == pytest.approx(math.sqrt(768), rel=1e-12)  # 27.7 against its role's 1
    assert gap.rule_init_std == pytest.approx(1.0) and gap.lr_ratio == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("param", ["spectral", "mup", "ntp", "sp"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("d", [256, 768, 4096])
def test_the_owner_decides_only_which_role_carries_the_gap(param, opt, d):
    """paramcalc/engine/ties.py: tied the other way, the gap is the reciprocal."""
    one = paramcalc.derive(lm("wte"), param, opt).tie_gaps({"d": d})["lm_head"]
    other = paramcalc.derive(lm("lm_head"), param, opt).tie_gaps({"d": d})["wte"]
    assert one.init_ratio * other.init_ratio == pytest.approx(1.0, rel=1e-9)


def test_the_gap_is_at_the_widths_asked():
    """Equal Theta-exponents, unequal numbers: the readout's ratio falls from 1/sqrt(d) to 1/sqrt(V)
    as d reaches V and stays there, a constant in width (exponent gap 0) but not 1."""
    d = paramcalc.derive(lm("wte"), "spectral", "adam")
    assert d.tied["lm_head"].init_exponent_gap == 0
    ratios = [d.tie_gaps({"d": w})["lm_head"].init_ratio for w in (768, 50257, 4 * 50257)]
    assert ratios[0] == pytest.approx(768 ** -0.5) and ratios[1] == pytest.approx(50257 ** -0.5)
    # Past d = V the role's own init is sqrt(V)/d against the use's 1/d.
    assert ratios[2] == pytest.approx(50257 ** -0.5)


def test_derive_warns_past_2x_and_says_both_ways(tmp_path):
    path = tmp_path / "lm.json"
    path.write_text(json.dumps(lm("wte")))
    result = runner.invoke(app, ["derive", str(path), "--param", "spectral", "--optimizer", "adam",
                                 "--emit", "json"])
    assert result.exit_code == 0, result.output
    assert "warning: lm_head (uses wte.weight, owned by wte): at d=768" in result.stderr
    assert "27.7x below what its role (output) asks" in result.stderr
    assert "wte's init would be 27.7x above its role's instead" in result.stderr
    gaps = json.loads(result.stdout)["values"]["tie_gaps"]["lm_head"]
    assert gaps["init_ratio"] == pytest.approx(768 ** -0.5) and gaps["lr_ratio"] == pytest.approx(1.0)


def test_no_warning_within_2x():
    """examples/gpt.yaml under muP at its base: the readout starts at 0.55x its role's (GPT-2's 0.02
    embedding against SP's 1/sqrt(768))."""
    result = runner.invoke(app, ["derive", str(EXAMPLES / "gpt.yaml"), "--param", "mup",
                                 "--optimizer", "adam", "--emit", "json"])
    assert result.exit_code == 0 and "warning" not in result.stderr
    gaps = json.loads(result.stdout)["values"]["tie_gaps"]["lm_head"]
    assert gaps["init_ratio"] == pytest.approx(0.02 * math.sqrt(768), rel=1e-9)


def test_tables_say_the_gap_and_the_command_warns(tmp_path):
    path = tmp_path / "lm.json"
    path.write_text(json.dumps(lm("wte")))
    result = runner.invoke(app, ["table", str(path), "--optimizer", "adam", "--widths", "d=4096"])
    assert result.exit_code == 0, result.output
    ratio = f"{4096 ** -0.5:.3g}x"
    assert f"`lm_head` uses wte.weight: its effective init std is {ratio} (spectral/Adam" in result.stdout
    assert "at `d` = 4096" in result.stdout
    assert "more than 2x off what its role (output) asks under spectral/Adam" in result.stderr
