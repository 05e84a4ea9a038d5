"""``paramcalc sweep``: the optimum's fit, a grid trained through the emitted code, nothing lost when a
sweep is interrupted, divergence recorded, and the command's input errors."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from paramcalc.cli import app
from paramcalc.errors import UsageError
from paramcalc.sweep import SweepConfig, analyse, drift, fit_optimum, load_records, run_sweep
from paramcalc.sweep.points import parse_log2_grid
from tests.conftest import EXAMPLES

DIGITS = EXAMPLES / "digits.yaml"
TINY = SweepConfig(("mup", "sp"), "adam", widths=(16, 64), log2_lrs=(-7.0, -5.0, -3.0), steps=2, batch=32)
runner = CliRunner()


def test_the_optimum_is_the_parabolas_vertex():
    xs = [-8.0, -7.0, -6.0, -5.0, -4.0]
    losses = [math.exp((x + 5.7) ** 2) for x in xs]  # log loss a parabola with its vertex at -5.7
    assert fit_optimum(xs, losses) == (pytest.approx(-5.7), 2)
    assert fit_optimum(xs, losses[::-1])[0] == pytest.approx(-6.3)
    # the best point on the grid's edge, or next to a diverged point: the grid point itself
    assert fit_optimum(xs, [5, 4, 3, 2, 1]) == (-4.0, 4)
    assert fit_optimum(xs, [5, 4, 3, 1, math.inf]) == (-5.0, 3)
    assert fit_optimum(xs, [math.inf] * 5)[1] == -1


def test_log2_grids():
    assert parse_log2_grid("-12:-9") == (-12.0, -11.0, -10.0, -9.0)
    assert parse_log2_grid("-2:-1:0.5") == (-2.0, -1.5, -1.0)
    assert parse_log2_grid("-8,-6") == (-8.0, -6.0)
    for bad in ("-4:-8", "a:b", "-1000:0", "0:10000:0.01", "1:2:0"):
        with pytest.raises(UsageError, match="--lrs"):
            parse_log2_grid(bad)


@pytest.mark.slow
def test_a_sweep_is_resumed_where_it_stopped(tmp_path):
    results = tmp_path / "sweep.jsonl"
    trained = []

    def stop_after_five(point, done, total):
        if len(trained) == 5:
            raise KeyboardInterrupt
        trained.append(point.key)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(DIGITS, TINY, results, progress=stop_after_five)
    assert len(load_records(results)) == 5  # every finished point is on disk
    with results.open("a") as fh:
        fh.write('{"parametrization": "sp", "wid')  # a line cut short by the kill
    again = []
    records = run_sweep(DIGITS, TINY, results, progress=lambda p, d, t: again.append(p.key))
    assert len(again) == 12 - 5 and not set(again) & set(trained)
    assert len(records) == 12 and len(load_records(results)) == 12
    # A finished sweep trains nothing more; the same points in the same order.
    assert [r["losses"] for r in run_sweep(DIGITS, TINY, results)] == [r["losses"] for r in records]
    with pytest.raises(UsageError, match="other settings"):
        run_sweep(DIGITS, SweepConfig(TINY.parametrizations, "adam", TINY.widths, TINY.log2_lrs, steps=3,
                                      batch=32), results)


@pytest.mark.slow
def test_mup_transfers_and_sp_drifts_on_digits():
    """The picture of mup's README at two widths (16x apart): Adam, 5 steps on 128 digits."""
    grid = tuple(float(k) for k in range(-9, -1))
    config = SweepConfig(("mup", "sp"), "adam", widths=(32, 512), log2_lrs=grid, steps=5, batch=128)
    optima = analyse(run_sweep(DIGITS, config))
    assert drift(optima, "mup") <= 1.0
    assert drift(optima, "sp") >= 2.0
    assert all(not o.at_edge for o in optima)


@pytest.mark.slow
def test_divergence_is_recorded_not_raised(tmp_path):
    config = SweepConfig(("sp",), "sgd", widths=(16, 32), log2_lrs=(-4.0, 0.0, 12.0), steps=3, batch=32)
    records = run_sweep(DIGITS, config, tmp_path / "s.jsonl")
    blown = [r for r in records if r["log2_lr"] == 12.0]
    assert blown and all(r["diverged"] and r["final"] is None for r in blown)
    json.loads((tmp_path / "s.jsonl").read_text().splitlines()[-1])  # valid JSON, no Infinity
    assert all(o.grid_log2_lr != 12.0 for o in analyse(records))


@pytest.mark.slow
def test_cli_sweep(tmp_path):
    out, plot = tmp_path / "s.jsonl", tmp_path / "s.png"
    result = runner.invoke(app, ["sweep", str(DIGITS), "--widths", "16,64", "--lrs=-7:-3:2", "--steps", "2",
                                 "--batch", "32", "-o", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "optimum moves by" in result.stdout and "mup" in result.stdout and "sp" in result.stdout
    assert len(out.read_text().splitlines()) == 12 and plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "mup,nope"], "--param"),
        (["--lrs", "x"], "--lrs"),
        (["--widths", "32"], "two different widths"),
        (["--lrs=-4,-3"], "three learning rates"),
        (["--data", "cifar"], "--data"),
        (["--plot", "s.xyz"], "--plot"),
    ],
)
def test_cli_bad_input(args, message):
    result = runner.invoke(app, ["sweep", str(DIGITS), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
