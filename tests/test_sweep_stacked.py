"""Points of one width trained together (``--stack``): the same losses as the points trained one by one,
divergence per point, and a model that cannot run batched trained one by one instead."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from paramcalc.cli import app
from paramcalc.spec import load_spec
from paramcalc.sweep import Point, SweepConfig, load_records, run_sweep
from paramcalc.sweep.execute import groups
from paramcalc.sweep.stacked import train_stacked
from paramcalc.sweep.train import Job, train_point
from tests.conftest import EXAMPLES

runner = CliRunner()


def _close(one: list[float | None], together: list[float | None], rel: float = 1e-5) -> bool:
    return len(one) == len(together) and all(
        (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel))
        for a, b in zip(one, together))


@pytest.mark.parametrize(("spec", "optimizer", "data", "width"), [
    ("digits.yaml", "adam", "digits", 32),
    ("digits.yaml", "muon", "digits", 32),
    ("digits.yaml", "sgd", "digits", 32),
    ("char_gpt.yaml", "adam", "chars", 16),
])
def test_stacked_points_train_as_they_do_alone(spec, optimizer, data, width):
    """Two seeds x two learning rates at one width, trained in one stack: each point's loss curve is
    the one it has alone, to float32 rounding (a batched matmul sums in another order)."""
    config = SweepConfig(("mup",), optimizer, (width,), (-8.0, -5.0), steps=3, seeds=2, batch=8, data=data,
                         seq=16)
    job = Job(load_spec(EXAMPLES / spec), config)
    group = [Point("mup", width, lr, seed) for lr in config.log2_lrs for seed in range(2)]
    alone = [train_point(job, p) for p in group]
    together = train_stacked(job, group)
    assert [r["stacked"] for r in together] == [4] * 4
    for one, both in zip(alone, together):
        assert (one["log2_lr"], one["seed"]) == (both["log2_lr"], both["seed"])
        assert _close(one["losses"], both["losses"]), (one["losses"], both["losses"])
    assert len({r["final"] for r in together}) == 4  # four different runs, not one copied


def test_a_diverging_point_stops_alone():
    """SGD at lr 2^12 overflows within a step or two: that point is recorded as diverged where it would
    be alone, and the points stacked with it train on unchanged."""
    config = SweepConfig(("sp",), "sgd", (32,), (-6.0, 12.0, -4.0), steps=4, batch=16)
    job = Job(load_spec(EXAMPLES / "digits.yaml"), config)
    group = [Point("sp", 32, lr, 0) for lr in config.log2_lrs]
    alone = [train_point(job, p) for p in group]
    together = train_stacked(job, group)
    assert [r["diverged"] for r in together] == [r["diverged"] for r in alone] == [False, True, False]
    for one, both in zip(alone, together):
        assert _close(one["losses"], both["losses"])
    assert len(together[0]["losses"]) == 5 > len(together[1]["losses"])


def test_units_share_parametrization_and_width():
    todo = [Point(p, w, lr, 0) for p in ("mup", "sp") for w in (16, 64) for lr in (-3.0, -2.0, -1.0)]
    units = groups(todo, 2)
    assert [len(u) for u in units] == [2, 1] * 4
    assert all(len({(p.parametrization, p.width) for p in u}) == 1 for u in units)
    assert [p for u in units for p in u] == todo
    assert groups(todo, 1) == [(p,) for p in todo]


def test_run_sweep_stacked_gives_the_sweeps_results(tmp_path):
    """run_sweep(stack=3) in this process: the grid's records equal the unstacked sweep's, each point
    on disk once."""
    config = SweepConfig(("mup",), "adam", (16, 64), (-7.0, -5.0, -3.0), steps=2, batch=32)
    alone = run_sweep(EXAMPLES / "digits.yaml", config)
    together = run_sweep(EXAMPLES / "digits.yaml", config, tmp_path / "s.jsonl", stack=3)
    assert [r["stacked"] for r in together] == [3] * 6
    assert len(load_records(tmp_path / "s.jsonl")) == 6
    for one, both in zip(alone, together):
        assert _close(one["losses"], both["losses"])


@pytest.mark.slow
def test_a_model_that_cannot_run_batched_trains_point_by_point(tmp_path):
    """The user's CNN has batch norms, whose running statistics are updated in place in the forward:
    vmap refuses it, and its points train one by one with the losses they have unstacked."""
    def sweep(out, stack):
        result = runner.invoke(app, ["sweep", "--model", "examples.your_model:cnn", "-p", "mup", "--widths",
                                     "8,16", "--lrs=-6:-2:2", "--steps", "2", "--batch", "16", "--workers",
                                     "1", "--stack", stack, "-o", str(out)])
        assert result.exit_code == 0, result.output
        return load_records(out)

    stacked, alone = sweep(tmp_path / "a.jsonl", "3"), sweep(tmp_path / "b.jsonl", "1")
    assert len(stacked) == 6 and not any("stacked" in r for r in stacked)
    assert [r["losses"] for r in stacked] == [r["losses"] for r in alone]


def test_cli_stack_option():
    result = runner.invoke(app, ["sweep", str(EXAMPLES / "digits.yaml"), "--stack", "0"])
    assert result.exit_code == 2 and "--stack" in result.output and "Traceback" not in result.output
