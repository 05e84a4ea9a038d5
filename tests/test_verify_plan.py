"""verify as config -> plan -> run -> present: the frozen config, planning without training, the
report drawn from data alone."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.cli import app  # noqa: E402
from paramcalc.engine.calculus import scaling  # noqa: E402
from paramcalc.errors import UsageError  # noqa: E402
from paramcalc.verify import VerifyConfig, calculus_lr, execute, plan, present, verify  # noqa: E402
from paramcalc.verify import model as model_module  # noqa: E402
from paramcalc.verify import run as run_module  # noqa: E402  (the module)
from paramcalc.verify.fit import fit_slope  # noqa: E402
from paramcalc.verify.judge import Check  # noqa: E402
from paramcalc.verify.measure import Measurement  # noqa: E402
from paramcalc.verify.report import Report  # noqa: E402
from tests.conftest import paper_mlp, small_gpt  # noqa: E402


class Planned(Exception):
    """Raised by a stand-in for plan(): the config it was handed is the test's result."""


def test_config_is_frozen_and_normalises_sequences():
    config = VerifyConfig("mup", "adam", widths=[64, 128], seeds=[0, 2], measure_steps=[2])
    assert config.widths == (64, 128) and config.seeds == (0, 2) and config.measure_steps == (2,)
    assert config == VerifyConfig("mup", "adam", widths=(64, 128), seeds=(0, 2), measure_steps=(2,))
    assert VerifyConfig(seeds=3).seeds == 3  # a count stays a count
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1  # type: ignore[misc]
    assert dataclasses.replace(config, lr=0.1).lr == 0.1 and config.lr is None


def test_keyword_call_builds_the_config_it_hands_to_plan(monkeypatch):
    seen = []

    def fake_plan(spec, config):
        seen.append(config)
        raise Planned

    monkeypatch.setattr(run_module, "plan", fake_plan)
    with pytest.raises(Planned):
        verify(paper_mlp(), "mup", "adam", widths=[32, 64], steps=2, seeds=1, lr=1e-3, device="cpu")
    expected = VerifyConfig("mup", "adam", widths=(32, 64), steps=2, seeds=1, lr=1e-3, device="cpu")
    assert seen == [expected]
    with pytest.raises(Planned):
        verify(paper_mlp(), config=expected)
    assert seen[-1] is expected
    with pytest.raises(TypeError, match="either config"):
        verify(paper_mlp(), config=expected, steps=4)
    with pytest.raises(TypeError):
        verify(paper_mlp(), "mup", no_such_option=1)


def test_cli_only_builds_the_config(monkeypatch, write_spec, tmp_path):
    import paramcalc.verify.terminal as terminal

    seen = {}

    def fake_run(spec, config, *, json_out, plot, rows):
        seen.update(spec=spec, config=config, json_out=json_out, rows=rows)
        return 1

    monkeypatch.setattr(terminal, "run_in_terminal", fake_run)
    spec = write_spec(yaml.safe_dump(paper_mlp(), sort_keys=False))
    result = CliRunner().invoke(app, ["verify", str(spec), "--param", "ntp", "--optimizer", "adam",
                                      "--widths", "128,32,64", "--steps", "2", "--seeds", "4", "--lr", "0.01",
                                      "--no-center", "--dtype", "float64", "--device", "cpu",
                                      "--json", str(tmp_path / "r.json"), "--rows", "failing"])
    assert result.exit_code == 1, result.output
    assert seen["config"] == VerifyConfig("ntp", "adam", widths=(128, 32, 64), steps=2, seeds=4, lr=0.01,
                                          center=False, dtype="float64", device="cpu")
    assert seen["spec"].name == "paper-mlp" and seen["rows"] == "failing"
    assert seen["json_out"] == tmp_path / "r.json"


def test_a_chain_is_planned_without_training(monkeypatch):
    def no_models(*args, **kwargs):
        raise AssertionError("planning a chain built a model")

    from paramcalc.verify import calibrate, measure, probe

    for module in (model_module, calibrate, measure, probe):  # every place that builds a model
        monkeypatch.setattr(module, "build", no_models)
    the_plan = plan(paper_mlp(), VerifyConfig("mup", "sgd", widths=(128, 32, 64), steps=2, device="cpu"))
    assert [at["d"] for at in the_plan.widths] == [32, 64, 128] and the_plan.lead == "d"
    assert the_plan.chain and the_plan.seeds == tuple(range(8)) and the_plan.batch == 32
    assert the_plan.loss == "mse" and the_plan.dtype == "float32" and the_plan.seq is None
    expected_lr = calculus_lr(scaling(paramcalc.derive(paper_mlp(), "mup", "sgd"), "mse", centered=True))
    assert the_plan.lr_auto and the_plan.lr == pytest.approx(expected_lr)
    assert the_plan.settings.lr == the_plan.lr
    assert the_plan.calibration is None and not the_plan.excluded and not the_plan.settings.structured
    assert set(the_plan.batches) == set(range(8)) and the_plan.batches[0].x.shape == (32, 3072)
    with pytest.raises(dataclasses.FrozenInstanceError):
        the_plan.lr = 1.0  # type: ignore[misc]


def test_running_a_plan_follows_it():
    the_plan = plan(paper_mlp(), VerifyConfig("mup", "sgd", widths=(32, 64), steps=1, seeds=2, lr=1e-3,
                                              measure_steps=(1,), device="cpu"))
    report = execute(the_plan)
    assert report.lr == 1e-3 and not report.lr_auto and report.seeds == [0, 1]
    assert [at["d"] for at in report.widths] == [32, 64] and len(report.measurements) == 4
    assert {m.seed for m in report.measurements} == {0, 1} and report.checks


def test_a_transformer_plan_takes_the_sequence_defaults():
    gpt = small_gpt("tiny-gpt", vocab=64, ctx=8, d_model_base=32, heads_base=2, d_head=16, n_layers=1)
    the_plan = plan(gpt, VerifyConfig("mup", "adam", widths=(32, 64), lr=1e-3, device="cpu"))
    assert not the_plan.chain and the_plan.seq == 2 and the_plan.batch == 2 and the_plan.loss == "ce"
    assert len(the_plan.seeds) == 6 and the_plan.dtype == "float64" and the_plan.settings.structured
    assert the_plan.batches[0].x.shape == (2, 2)
    assert set(the_plan.excluded) == {"blocks.0.attn.k.bias"}  # the float64 probe ran in planning
    assert "No prediction for this architecture" in the_plan.notes[0]


def test_bad_input_is_raised_by_the_plan():
    with pytest.raises(UsageError, match="two different widths"):
        plan(paper_mlp(), VerifyConfig(widths=(64, 64)))
    with pytest.raises(UsageError, match="--dtype"):
        plan(paper_mlp(), VerifyConfig(widths=(32, 64), dtype="float16"))
    with pytest.raises(UsageError, match="learning rate"):
        plan(paper_mlp(), VerifyConfig(widths=(32, 64), lr=-1.0, device="cpu"))


def _report(passed: bool) -> Report:
    """A report put together by hand, as a run would: two widths, one seed, one check."""
    spec = paramcalc.load_spec(paper_mlp())
    widths = [{"n0": 3072, "d": 32, "n_out": 1}, {"n0": 3072, "d": 64, "n_out": 1}]
    growth = 1.0 if passed else 2.0  # RMS(dh) of fc2 flat (Desideratum 1), or growing like n^1
    ms = [Measurement(at, 0, values={("rms_dh", "fc2", 1): 0.5 * (at["d"] / 32) ** (growth - 1)},
                      loss=[1.0, 0.9]) for at in widths]
    slope = fit_slope([32.0, 64.0], [[m.values[("rms_dh", "fc2", 1)] for m in ms]])
    message = ("RMS(dh) of fc2 scales like n^+0.00; Desideratum 1 asks n^0" if passed else
               "RMS(dh) of fc2 after 1 step blows up: it scales like n^+1.00, Desideratum 1 asks n^0")
    check = Check("target", "rms_dh", "fc2", 1, slope, None, None, 0, 0.0, passed, message)
    return Report(spec=spec, parametrization="mup", optimizer="sgd", form="table3", loss="mse",
                  data="synthetic", lr=0.01, lr_auto=False, steps=1, batch=8, seeds=[0], device="cpu",
                  lead="d", widths=widths, measurements=ms, scaling=None,
                  slopes={("rms_dh", "fc2", 1): slope}, predicted_slopes={}, checks=[check],
                  notes=["a note"])


def test_present_draws_the_report_from_its_data():
    from rich.console import Console

    good, bad = _report(True), _report(False)
    assert good.passed and good.exit_code == 0 and bad.failures == bad.checks and bad.exit_code == 1
    assert present.summary(good).startswith("paper-mlp: mup, sgd: PASS.")
    assert "d = 32..64" in present.summary(good)
    assert present.summary(bad) == ("paper-mlp: mup, sgd: FAIL. Fails the paper's conditions: RMS(dh) of fc2 "
                                    "after 1 step blows up: it scales like n^+1.00, Desideratum 1 asks n^0.")
    assert good.summary == present.summary(good) and bad.to_json() == present.to_json(bad)
    assert present.lr_source(good) == "lr given"
    data = json.loads(json.dumps(present.to_json(bad)))
    assert data["passed"] is False and data["exit_code"] == 1 and data["sweep"]["values"] == [32, 64]
    assert data["checks"][0]["measured"] == pytest.approx(1.0) and data["checks"][0]["target"] == "0"
    assert data["quantities"]["fc2"]["rms_dh"]["steps"]["1"]["values"] == [[0.5, 1.0]]
    assert data["runs"][1]["loss"] == [1.0, 0.9] and data["notes"] == ["a note"]
    console = Console(record=True, width=160)
    present.print_report(bad, console)
    text = console.export_text()
    assert "paramcalc verify paper-mlp: mup (table3), sgd; d = 32..64" in text
    assert "FAIL too large n^+1.00" in text and "* Learning rate 0.01: lr given." in text
    assert "* a note" in text
    assert math.isfinite(data["lr"])
