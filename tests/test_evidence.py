"""Evidence before verdicts (paramcalc.verify.evidence): no PASS from a sweep too short or seeds too few.

The broken rule is muP with its hidden SGD learning rate times sqrt(m) (hidden updates grow like
n^+1/2): it passed `--widths 64,128 --seeds 2` before this gate, where the allowance is 0.5 to 1.5.
"""

from __future__ import annotations

import json

import pytest
import sympy
from typer.testing import CliRunner

from paramcalc.cli import app
from paramcalc.engine import register_rule
from paramcalc.engine.rules import Scales, unregister_rule
from paramcalc.verify import verify
from paramcalc.verify.evidence import MAX_ALLOWANCE, sweep_shortfall
from tests.conftest import paper_mlp


class BrokenMup:
    """muP, with the hidden layers' SGD learning rate times sqrt(m): hidden updates grow like n^1/2."""

    name = "broken"
    title = "broken muP"
    forms = ("table3",)

    def scales(self, shape, optimizer, form):
        from paramcalc.engine.rules.mup import RULE

        s = RULE.scales(shape, optimizer, form)
        if shape.role != "hidden":
            return s
        return Scales(s.init_std, s.lr * sympy.sqrt(shape.d_in / shape.d_in_base), s.multiplier)

    def attention_scale(self, d_head, d_head_base):
        return 1 / d_head


@pytest.fixture
def broken():
    register_rule(BrokenMup())
    yield "broken"
    unregister_rule("broken")


SMALL_SWEEPS = [
    dict(widths=[64, 128], seeds=2),
    dict(widths=[64, 128], seeds=3),
    dict(widths=[64, 128], seeds=1),
    dict(widths=[32, 64, 128], seeds=2),
    dict(widths=[64, 128, 256], seeds=3),
    dict(widths=[32, 256], seeds=2),
]


@pytest.mark.parametrize("sweep", SMALL_SWEEPS)
def test_broken_rule_never_passes(broken, sweep):
    report = verify(paper_mlp(), broken, "sgd", steps=2, device="cpu", **sweep)
    assert report.verdict in ("fail", "inconclusive") and report.exit_code in (1, 3), report.summary


@pytest.mark.parametrize("sweep", SMALL_SWEEPS[:3])
def test_real_ntp_is_never_pass(sweep):
    report = verify(paper_mlp(), "ntp", "sgd", steps=2, device="cpu", **sweep)
    assert not report.passed and report.exit_code in (1, 3), report.summary


def test_broken_rule_fails_at_the_default_sweep(broken):
    report = verify(paper_mlp(), broken, "sgd", steps=2, device="cpu")
    assert report.verdict == "fail"
    assert ("update_norm", "fc2.weight") in {(c.quantity, c.subject) for c in report.failures}


def test_sweep_shortfall_names_what_to_add():
    assert sweep_shortfall("d", [64, 128, 256, 512]) is None
    short = sweep_shortfall("d", [64, 128])
    assert "2 widths (at least 3)" in short and "a span of 2x (at least 8x)" in short
    assert "64,128,256,512" in short
    assert "span of 4x" in sweep_shortfall("d", [64, 128, 256])


def test_command_line_says_inconclusive_with_exit_3(write_spec, tmp_path):
    import yaml

    spec = write_spec(yaml.safe_dump(paper_mlp(), sort_keys=False))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["verify", str(spec), "-p", "mup", "--optimizer", "adam", "--widths",
                                      "32,64", "--steps", "1", "--seeds", "2", "--device", "cpu",
                                      "--json", str(out)])
    assert result.exit_code == 3, result.output
    assert "INCONCLUSIVE (exit 3)" in result.output and "widen --widths" in result.output
    assert "inconclusive" in result.output  # the table's verdict column
    data = json.loads(out.read_text())
    assert data["verdict"] == "inconclusive" and data["exit_code"] == 3
    weak = [c for c in data["checks"] if c["verdict"] == "inconclusive"]
    assert weak and all(c["evidence"] for c in weak)


def test_a_wide_allowance_is_inconclusive():
    """Enough widths, too few seeds: each passing slope's allowance is over the bound."""
    report = verify(paper_mlp(), "mup", "adam", widths=[64, 128, 256, 512], seeds=2, steps=2, device="cpu")
    assert not report.failures
    wide = [c for c in report.inconclusive if "allowance" in c.evidence]
    assert wide and all(0.1 + c.measured.margin > MAX_ALLOWANCE for c in wide)
    assert "add --seeds" in wide[0].evidence


def test_a_long_table_shows_the_inconclusive_rows(monkeypatch):
    from paramcalc.verify import present

    report = verify(paper_mlp(), "mup", "adam", widths=[32, 64], seeds=2, steps=1, device="cpu")
    assert report.verdict == "inconclusive"
    monkeypatch.setattr(present, "AUTO_ROWS", 1)  # as for a GPT's ~1000 rows
    shown = present.report_table(report, "auto").row_count
    assert shown == len({(c.subject, c.quantity) for c in report.inconclusive}) > 0
    assert present.report_table(report, "failing").row_count == 0
