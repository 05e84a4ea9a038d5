"""`paramcalc derive`: the contract's outputs, and bad input as exit code 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import paramcalc
from paramcalc import registry
from paramcalc.cli import app
from paramcalc.emit.json import dumps
from tests.conftest import EXAMPLES

runner = CliRunner()
MLP = str(EXAMPLES / "mlp.yaml")


def run(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("param", list(registry.PARAMETRIZATIONS))
@pytest.mark.parametrize("opt", list(registry.OPTIMIZERS))
def test_json_matches_library(param, opt):
    result = run("derive", MLP, "--param", param, "--optimizer", opt, "--emit", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["parametrization"] == param and data["optimizer"] == opt
    derivation = paramcalc.derive(paramcalc.load_spec(MLP), param, opt)
    assert list(data["params"]) == list(derivation)
    symbols = derivation.spec.symbols
    for name, entry in data["params"].items():
        assert set(entry) == {"init_std", "lr", "multiplier"}
        for q, text in entry.items():
            parsed = sympy.sympify(text, locals=symbols)
            assert sympy.simplify(parsed - derivation[name].expr(q)) == 0
    numbers = derivation.evaluate()
    assert data["values"]["params"] == numbers  # floats survive JSON exactly


def test_json_at_widths_and_exponents():
    result = run("derive", MLP, "-e", "json", "--widths", "d=4096")
    data = json.loads(result.stdout)
    assert data["values"]["widths"]["d"] == 4096
    assert data["values"]["params"]["fc2.weight"]["init_std"] == pytest.approx(1 / 64)
    assert data["exponents"]["fc2.weight"] == {"init_std": "-1/2", "lr": "0", "multiplier": "0"}
    assert data["exponents"]["fc1.bias"]["init_std"] is None


def test_markdown_and_table():
    md = run("derive", MLP, "--param", "mup", "--emit", "markdown")
    assert md.exit_code == 0
    assert "| `head.weight` | output |" in md.stdout and "`16/d`" in md.stdout
    table = run("derive", MLP)
    assert table.exit_code == 0 and "head.weight" in table.stdout and "n_out/d" in table.stdout


def test_output_file_written_atomically(tmp_path):
    out = tmp_path / "d.json"
    result = run("derive", MLP, "-e", "json", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text())["spec"] == "mlp"
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]  # no temporary left behind


def test_output_to_missing_directory(tmp_path):
    result = run("derive", MLP, "-e", "json", "-o", str(tmp_path / "no" / "d.json"))
    assert result.exit_code == 2
    assert "cannot write" in result.stderr


def test_form_option():
    result = run("derive", MLP, "-p", "mup", "--form", "table8", "-e", "json")
    assert json.loads(result.stdout)["params"]["head.weight"]["multiplier"] == "256/d"
    bad = run("derive", MLP, "-p", "spectral", "--form", "table8")
    assert bad.exit_code == 2 and "forms default" in bad.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["derive", "missing.yaml"], "missing.yaml: file not found"),
        (["derive", MLP, "--widths", "dd=3"], "widths.dd: unknown width symbol"),
        (["derive", MLP, "--widths", "d=x"], "NAME=INTEGER"),
        (["derive", MLP, "--param", "mu"], "'mu' is not one of"),
        (["derive", MLP, "--emit", "pdf"], "'pdf' is not one of"),
    ],
)
def test_bad_input_exit_2(args, expected):
    result = run(*args)
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_bad_spec_via_real_process(tmp_path):
    """The installed entry point: one paragraph on stderr, exit 2, no traceback."""
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nwidths: {d: {base: 64}}\nlayers:\n  - {name: a, fan_in: dd, fan_out: d}\n")
    proc = subprocess.run([sys.executable, "-m", "paramcalc", "derive", str(spec)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {spec}: layers[0].fan_in: undefined symbol 'dd' (declared widths: d)"
    )
    assert proc.stdout == ""


def test_help_on_every_command():
    for args in (["--help"], ["derive", "--help"]):
        result = run(*args)
        assert result.exit_code == 0 and "Usage" in result.stdout
    assert run("--version").stdout.startswith("paramcalc ")


def test_output_file_gets_normal_permissions(tmp_path):
    import os
    import stat

    out = tmp_path / "d.json"
    assert run("derive", MLP, "-e", "json", "-o", str(out)).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    out.chmod(0o640)  # an existing file keeps its mode
    assert run("derive", MLP, "-e", "json", "-o", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json_data = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.text(max_size=8), _json_data, max_size=4))
def test_json_layout_round_trips(data):
    """One key per line down to depth 2, the C encoder's compact text below; shared leaves are
    written once and reused, and the result parses back to the same data."""
    shared = {"init_std": "1/sqrt(d)", "lr": "1"}
    data = {**data, "params": {"a": shared, "b": shared, "é\"x": {"k": [1, 2.5]}}}
    text = dumps(data)
    assert json.loads(text) == data
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert '  "params": {' in lines
    assert f'    "a": {json.dumps(shared)},' in lines and f'    "b": {json.dumps(shared)},' in lines
    assert '    "\\u00e9\\"x": {"k": [1, 2.5]}' in lines  # escaped as json.dumps escapes


def test_markdown_has_tied_uses_and_attention_scales():
    md = run("derive", str(EXAMPLES / "gpt.yaml"), "--param", "mup", "--emit", "markdown").stdout
    assert "| `lm_head` (uses `wte.weight`) | output |" in md
    assert "| `blocks.*.attn.scale` \u00d712 | `1/sqrt(d_head)` = 0.125 |" in md
    assert "blocks.3." not in md


def test_terminal_table_collapses_repeated_blocks_and_explains_constant_inits():
    result = run("derive", str(EXAMPLES / "gpt.yaml"), "--param", "mup")
    assert result.exit_code == 0, result.output
    assert "blocks.*.attn.q.weight x12" in result.stdout
    assert "blocks.3.attn.q.weight" not in result.stdout
    assert "* stands for every block index" in result.stdout
    assert "norm gains at 1" in result.stdout  # a gain's init_std 0 is not a zero gain
    # The tied readout's own multiplier (TP5 Table 8's 1/m) and the attention-logit scale.
    assert "lm_head (uses wte.weight)" in result.stdout and "768/d_model" in result.stdout
    assert "blocks.*.attn.scale x12" in result.stdout and "1/sqrt(d_head)" in result.stdout
    plain = run("derive", MLP)
    assert "fc1.weight" in plain.stdout and "stands for every block" not in plain.stdout
    assert "norm gains" not in plain.stdout
