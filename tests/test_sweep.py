"""``paramcalc sweep``: the optimum's fit, a grid trained through the emitted code, nothing lost when a
sweep is interrupted, divergence recorded, and the command's input errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from paramcalc.cli import app
from paramcalc.errors import UsageError
from paramcalc.sweep import (
    SweepConfig,
    SweepFailed,
    analyse,
    drift,
    fit_optimum,
    load_records,
    points,
    run_sweep,
)
from paramcalc.sweep.points import parse_log2_grid
from tests.conftest import EXAMPLES

DIGITS = EXAMPLES / "digits.yaml"
#: The spec of tests.model_factories:fails_wide (64 inputs, hidden d, 10 outputs).
DIGITS_LIKE = {"name": "fails-wide", "widths": {"n_in": 64, "d": {"base": 16}, "n_out": 10},
               "layers": [{"name": "0", "fan_in": "n_in", "fan_out": "d", "bias": True},
                          {"name": "2", "fan_in": "d", "fan_out": "n_out", "bias": True}]}
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

    def stop_after_five(p):
        if p.point is not None:
            trained.append(p.point.key)
        if p.done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(DIGITS, TINY, results, progress=stop_after_five)
    assert len(load_records(results)) == 5  # every finished point is on disk
    with results.open("a") as fh:
        fh.write('{"parametrization": "sp", "wid')  # a line cut short by the kill
    again = []
    records = run_sweep(DIGITS, TINY, results, progress=lambda p: p.point and again.append(p.point.key))
    assert len(again) == 12 - 5 and not set(again) & set(trained)
    assert len(records) == 12 and len(load_records(results)) == 12
    # A finished sweep trains nothing more; the same points in the same order.
    assert [r["losses"] for r in run_sweep(DIGITS, TINY, results)] == [r["losses"] for r in records]
    with pytest.raises(UsageError, match="other settings"):
        run_sweep(DIGITS, SweepConfig(TINY.parametrizations, "adam", TINY.widths, TINY.log2_lrs, steps=3,
                                      batch=32), results)


@pytest.mark.slow
def test_a_killed_sweep_finishes_only_the_missing_points(tmp_path):
    """SIGKILL the command (no chance to clean up) once some points are on disk; the rerun trains
    exactly the others and the file ends with the whole grid, each point once."""
    results = tmp_path / "sweep.jsonl"
    command = [sys.executable, "-m", "paramcalc", "sweep", str(DIGITS), "--widths", "16,32,64", "--lrs=-8:-3",
               "--steps", "3", "--batch", "32", "--workers", "1", "-o", str(results)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(load_records(results)) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    before = {(r["parametrization"], r["width"], r["log2_lr"], r["seed"]) for r in load_records(results)}
    config = SweepConfig(("mup", "sp"), "adam", (16, 32, 64), tuple(float(k) for k in range(-8, -2)), steps=3,
                         batch=32)
    assert 4 <= len(before) < 36
    again = []
    run_sweep(DIGITS, config, results, progress=lambda p: p.point and again.append(p.point.key))
    assert set(again) == {p.key for p in points(config)} - before and len(again) == len(set(again))
    keys = [(r["parametrization"], r["width"], r["log2_lr"], r["seed"]) for r in load_records(results)]
    assert len(keys) == 36 == len(set(keys))


#: Runs in a fresh interpreter: Ray forks its helper processes, which in a process that has loaded JAX
#: (earlier tests) is a warning about deadlocks, and would leave Ray's state in the test process.
_THREE_ENGINES = """
import json, sys
import ray
from paramcalc.sweep import SweepConfig, run_sweep
from tests.test_sweep import DIGITS

def main():
    config = SweepConfig(("mup",), "adam", widths=(16, 64), log2_lrs=(-7.0, -5.0, -3.0), steps=3, batch=32,
                         seeds=2)
    out = {"serial": run_sweep(DIGITS, config), "pool": run_sweep(DIGITS, config, sys.argv[1], workers=2)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out["ray"] = run_sweep(DIGITS, config, sys.argv[2], ray="local")
    finally:
        ray.shutdown()
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_a_process_pool_and_ray_give_the_same_records_as_one_process(tmp_path):
    script = tmp_path / "engines.py"
    script.write_text(_THREE_ENGINES)
    paths = [str(tmp_path / "pool.jsonl"), str(tmp_path / "ray.jsonl")]
    done = subprocess.run([sys.executable, str(script), *paths],
                          capture_output=True, text=True, timeout=600, cwd=EXAMPLES.parent,
                          env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for a, b, c in zip(out["serial"], out["pool"], out["ray"], strict=True):
        assert a["width"] == b["width"] == c["width"] and a["log2_lr"] == b["log2_lr"] == c["log2_lr"]
        assert b["losses"] == c["losses"]  # one thread each: the very same arithmetic
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert len(out["ray"]) == 12 == len(load_records(tmp_path / "ray.jsonl"))


def test_ray_is_an_extra_not_a_dependency():
    from importlib.metadata import requires

    needs_ray = [r for r in requires("paramcalc") if r.startswith("ray")]
    assert needs_ray and all("extra ==" in r for r in needs_ray)
    assert any(r.replace('"', "'").endswith("extra == 'ray'") for r in needs_ray)


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


def test_chars_are_next_token_windows_of_pythons_manual():
    from paramcalc.verify.data import CHARS, char_text, make_batch

    b = make_batch(data="chars", loss="ce", batch=4, n_in=96, n_out=96, sparse=True, seed=0, seq=16)
    assert b.x.shape == b.y.shape == (4, 16) and int(b.x.max()) < len(CHARS) == 96
    assert (b.x[:, 1:] == b.y[:, :-1]).all()  # y is x shifted by one character
    window = "".join(CHARS[i] for i in b.x[0].tolist())
    assert window in char_text()  # real text, not random ids
    with pytest.raises(UsageError, match="96 symbols"):
        make_batch(data="chars", loss="ce", batch=4, n_in=50, n_out=50, sparse=True, seed=0, seq=16)
    with pytest.raises(UsageError, match="language models"):
        make_batch(data="chars", loss="ce", batch=4, n_in=64, n_out=10, sparse=False, seed=0)


@pytest.mark.slow
def test_a_character_level_gpt_trains_on_fresh_text_each_step(tmp_path):
    config = SweepConfig(("mup",), "adam", widths=(8, 16), log2_lrs=(-6.0, -4.0, -2.0), steps=3, batch=4,
                         data="chars", seq=16)
    records = run_sweep(EXAMPLES / "char_gpt.yaml", config)
    assert all(len(r["losses"]) == 4 and not r["diverged"] for r in records)
    assert all(abs(r["losses"][0] - math.log(96)) < 0.5 for r in records)  # uniform over 96 at init
    assert min(r["final"] for r in records) < records[0]["losses"][0]  # it learns something


@pytest.mark.slow
def test_cli_sweep_of_a_users_cnn_on_digit_images(tmp_path):
    """--model: the spec is inferred from the user's CNN (3 input channels), which gets digits as
    8x8 images repeated over its channels."""
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["sweep", "--model", "examples.your_model:cnn", "-p", "mup", "--widths",
                                 "8,16", "--lrs=-6:-2:2", "--steps", "2", "--batch", "16", "--workers", "1",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    records = load_records(out)
    assert len(records) == 6 and all(r["final"] is not None for r in records)


@pytest.mark.slow
def test_points_that_raise_are_reported_and_retried(tmp_path):
    """A point that raises (here: the wide model's forward) is not written; the others are, the sweep
    ends with SweepFailed naming it, and the command exits 1 saying how to retry."""
    config = SweepConfig(("mup",), "adam", widths=(16, 64), log2_lrs=(-6.0, -5.0, -4.0), steps=2, batch=16)
    with pytest.raises(SweepFailed, match="out of memory") as failed:
        run_sweep(DIGITS_LIKE, config, tmp_path / "s.jsonl", model="tests.model_factories:fails_wide")
    assert len(failed.value.failures) == 3 and {p.width for p, _ in failed.value.failures} == {64}
    assert {r["width"] for r in load_records(tmp_path / "s.jsonl")} == {16}
    result = runner.invoke(app, ["sweep", "--model", "tests.model_factories:fails_wide", "-p", "mup",
                                 "--widths", "16,64", "--lrs=-6:-4", "--steps", "2", "--batch", "16",
                                 "--workers", "1", "-o", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 1 and "rerun with it to retry" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "mup,nope"], "--param"),
        (["--lrs", "x"], "--lrs"),
        (["--widths", "32"], "two different widths"),
        (["--lrs=-4,-3"], "three learning rates"),
        (["--data", "cifar"], "--data"),
        (["--plot", "s.xyz"], "--plot"),
        (["--workers", "many"], "--workers"),
        (["--data", "chars"], "language models"),
    ],
)
def test_cli_bad_input(args, message):
    result = runner.invoke(app, ["sweep", str(DIGITS), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_cli_ray_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    result = runner.invoke(app, ["sweep", str(DIGITS), "--widths", "16,32", "--lrs=-6:-4", "--steps", "1",
                                 "--ray", "local"])
    assert result.exit_code == 2 and 'paramcalc[ray]' in result.stderr


def test_workers_one_per_core_on_the_cpu_and_one_on_a_gpu():
    from paramcalc.cli_sweep import _workers
    from paramcalc.sweep.execute import cores

    assert _workers("auto", "cpu") == cores() and _workers("auto", "cuda") == 1 and _workers("3", "cpu") == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(UsageError, match="--workers"):
            _workers(bad, "cpu")


def test_auto_device_is_resolved_where_the_point_trains():
    import torch

    from paramcalc.sweep.train import _where

    assert _where("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert _where("cpu") == "cpu"
