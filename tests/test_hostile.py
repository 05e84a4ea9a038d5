"""Hostile input ends in one paragraph and exit code 2 (exit 1 for a verify finding): never a traceback,
a hang, unbounded memory or a wrong number. Each case is one the fuzzing of the issue "A verifier you
can trust" found."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
from typer.testing import CliRunner

from paramcalc import SpecError, load_spec
from paramcalc.cli import app
from paramcalc.symbolic import finite_values
from tests.conftest import EXAMPLES

runner = CliRunner()

ONE_LAYER = "name: x\nwidths: {{d: {{base: 8}}}}\nlayers:\n  - {{name: c, fan_in: d, fan_out: d{extra}}}\n"


def derive(*args: str):
    return runner.invoke(app, ["derive", *args])


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # repeats multiply: 10000 x 10000 layers would take gigabytes
        ("name: x\nwidths: {d: {base: 8}}\nlayers:\n  - name: a\n    repeat: 10000\n    layers:\n"
         "      - name: b\n        repeat: 10000\n        layers:\n"
         "          - {name: c, fan_in: d, fan_out: d}\n",
         ["layers[0].repeat", "more than 50000 layers"]),
        # nested integer powers are refused before sympy computes them
        (ONE_LAYER.format(extra=", gain: '((((((999999999999999**8)**8)**8)**8)**8)**8)'"),
         ["layers[0].gain", "too large"]),
        (ONE_LAYER.format(extra=", gain: '(10**8)**8 * (10**8)**8 * (10**8)**8 * (10**8)**8 * (10**8)**8'"),
         ["layers[0].gain", "too large"]),
        # YAML numbers: an integer of 5000 digits, a float that overflows, non-decimal forms
        (ONE_LAYER.format(extra=", gain: " + "9" * 5000), ["5000 digits"]),
        (ONE_LAYER.format(extra=", gain: 1.0e+400"), ["too large for a number"]),
        (ONE_LAYER.format(extra=", gain: .inf"), ["layers[0].gain"]),
        ("name: x\nwidths: {d: {base: 0x40}}\nlayers:\n  - {name: c, fan_in: d, fan_out: d}\n",
         ["widths.d.base", "'0x40'"]),
        ("name: x\nwidths: {d: {base: 8}, e: 1:04}\nlayers:\n  - {name: c, fan_in: e, fan_out: d}\n",
         ["widths.e", "'1:04'"]),
        ("name: x\nwidths: {d: {base: 8}, d: {base: 16}}\nlayers:\n  - {name: c, fan_in: d, fan_out: d}\n",
         ["duplicate key 'd'"]),
        ("name: x\nwidths: {d: {base: 8}, h: {base: 2}}\nlayers:\n  - {name: a, kind: attention, d_model: d, "
         "n_heads: h, d_head: 4, names: {q: " + "q" * 300 + ", k: k, v: v, o: o}}\n",
         ["layers[0].names.q", "300 characters (at most 200)"]),
        ("name: x\nwidths: {lambda: {base: 8}}\nlayers:\n  - {name: c, fan_in: lambda, fan_out: lambda}\n",
         ["widths.lambda", "Python keyword"]),
    ],
)
def test_hostile_specs_are_refused(tmp_path, text, words):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert_refused(derive(str(spec), "--emit", "json"), *words)


def test_a_long_integer_is_refused_before_python_converts_it():
    with pytest.raises(SpecError, match="digits"):
        load_spec(ONE_LAYER.format(extra=", gain: " + "9" * 5000))


def test_escape_codes_in_keys_are_not_printed_raw(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_LAYER.format(extra=', "\\e[31mred": 1'))
    result = derive(str(spec))
    assert_refused(result, "unknown key", "\\x1b[31mred")
    assert "\x1b" not in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_neither_read_nor_written(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    assert_refused(derive(str(fifo)), "not a regular file")  # would block forever on open
    assert_refused(derive(str(EXAMPLES / "mlp.yaml"), "-o", str(fifo)), "-o", "not a regular file")


def test_output_to_a_directory_or_nothing_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(derive(str(EXAMPLES / "mlp.yaml"), "-o", str(tmp_path)), "-o", "is a directory")
    assert_refused(derive(str(EXAMPLES / "mlp.yaml"), "-o", ""), "-o", "is a directory")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_output_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    result = derive(str(EXAMPLES / "mlp.yaml"), "--emit", "json", "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and json.loads(target.read_text())["spec"] == "mlp"


@pytest.mark.parametrize("value", ["d=²", "d=" + "9" * 400, "d=-4"])
def test_bad_width_values_on_the_command_line(value):
    assert_refused(derive(str(EXAMPLES / "mlp.yaml"), "--widths", value), "--widths")


@pytest.mark.parametrize("param", ["spectral", "mup"])
@pytest.mark.parametrize("d", [8, 4])
def test_widths_that_make_a_dimension_vanish(tmp_path, param, d):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nwidths: {n0: 16, d: {base: 16}}\nlayers:\n"
                    "  - {name: a, fan_in: n0, fan_out: d - 8}\n  - {name: b, fan_in: d - 8, fan_out: d}\n")
    result = derive(str(spec), "-p", param, "--widths", f"d={d}", "--emit", "json")
    assert_refused(result, "a.weight", "dimension d - 8", "positive")


def test_no_number_that_is_not_finite_is_emitted():
    with pytest.raises(SpecError, match="fc.weight: init_std evaluates to inf"):
        finite_values({"fc.weight": {"init_std": math.inf, "lr": 1.0}}, "spec.yaml", {"d": 8})
    assert finite_values({"a": 1.0}, None, None) == {"a": 1.0}


def test_verify_plot_format_is_checked_before_training():
    pytest.importorskip("matplotlib")
    result = runner.invoke(app, ["verify", str(EXAMPLES / "mlp.yaml"), "--plot", "out.xyz"])
    assert_refused(result, "--plot", "png")


@pytest.mark.slow
def test_verify_with_an_overflowing_lr_reports_divergence():
    pytest.importorskip("torch")
    result = runner.invoke(app, ["verify", str(EXAMPLES / "mlp.yaml"), "--widths", "32,64", "--steps", "1",
                                 "--seeds", "1", "--lr", "1e39", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "Training diverged" in result.stdout
