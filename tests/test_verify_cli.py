"""`paramcalc verify`: exit codes 0 (pass), 1 (fail), 2 (bad input, one paragraph, no traceback)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("torch")

from paramcalc.cli import app  # noqa: E402
from tests.conftest import paper_mlp  # noqa: E402

runner = CliRunner()

PAPER_MLP = yaml.safe_dump(paper_mlp(), sort_keys=False)  # a spec file's text
FAST = ["--widths", "32,64,128", "--steps", "2", "--seeds", "3", "--device", "cpu"]


def run(*args: str):
    return runner.invoke(app, ["verify", *args])


def test_mup_passes(write_spec, tmp_path):
    spec = write_spec(PAPER_MLP)
    out = tmp_path / "mup.json"
    conclusive = ["--widths", "64,128,256,512,1024", "--steps", "2", "--device", "cpu"]  # 8 seeds
    result = run(str(spec), "--param", "mup", "--optimizer", "adam", *conclusive, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "||dW||_*" in result.stdout and "fc2.weight" in result.stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["optimizer"] == "adam" and data["exit_code"] == 0


def test_ntp_fails_and_names_the_layers(write_spec, tmp_path):
    spec = write_spec(PAPER_MLP)
    plot = tmp_path / "ntp.png"
    result = run(str(spec), "--param", "ntp", *FAST, "--plot", str(plot), "--json", str(tmp_path / "n.json"))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "RMS(dh) of fc1" in result.stdout and "vanishes" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    checks = json.loads((tmp_path / "n.json").read_text())["checks"]
    failed = {c["subject"] for c in checks if not c["passed"]}
    assert {"fc1", "fc2", "head.weight"} <= failed
    # --rows failing shows exactly the failing rows; the rest is counted below the table
    short = run(str(spec), "--param", "ntp", *FAST, "--rows", "failing")
    assert short.exit_code == 1
    assert "passing rows not shown" in short.stdout
    assert "fc2.weight" in short.stdout and "RMS(h) " not in short.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "64,abc"], "--widths"),
        (["--widths", "64"], "two different widths"),
        (["--steps", "0"], "--steps"),
        (["--model", "no_such_module_xyz:build"], "cannot import"),
        (["--model", "nocolon"], "module:function"),
        (["--data", "digits"], "64 dense features"),
        (["--loss", "ce"], "cross-entropy"),
        (["--lr", "-1"], "learning rate"),
    ],
)
def test_bad_input_exits_2(write_spec, args, message):
    result = run(str(write_spec(PAPER_MLP)), "--widths", "32,64", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_bad_spec_and_missing_file(write_spec, tmp_path):
    result = run(str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = run(str(write_spec("name: x\nwidths: {d: 3}\nlayers: []\n")))
    assert result.exit_code == 2


def test_cuda_without_a_gpu(write_spec):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run(str(write_spec(PAPER_MLP)), "--widths", "32,64", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr
