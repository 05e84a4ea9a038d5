"""The paper's figure scripts (examples/figure1.py, figure2.py) run end to end, at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_figure1_runs(tmp_path):
    out = run("figure1.py", "--trials", "1", "--out", str(tmp_path / "f1.png"),
              "--json", str(tmp_path / "f1.json"))
    assert (tmp_path / "f1.png").stat().st_size > 0 and "stable rank" in out
    data = json.loads((tmp_path / "f1.json").read_text())
    assert data["batches"][0] == 1
    for activation in ("relu", "tanh"):
        ranks = data[activation]["stable_rank"]
        assert len(ranks) == len(data["batches"])
        # One example's gradient is an outer product: stable rank 1. More examples, at least 1.
        assert ranks[0][0] == pytest.approx(1.0, abs=1e-3) and min(r[0] for r in ranks) >= 1 - 1e-3


def test_figure2_runs(tmp_path):
    out = run("figure2.py", "--widths", "16,32", "--steps", "3", "--seeds", "1", "--device", "cpu",
              "--out", str(tmp_path / "f2.png"), "--json", str(tmp_path / "f2.json"))
    assert (tmp_path / "f2.png").stat().st_size > 0
    data = json.loads((tmp_path / "f2.json").read_text())
    assert set(data["panels"]) == {"spectral", "ntp", "mup"} and data["widths"] == [16, 32]
    for panels in data["panels"].values():
        assert set(panels) == {"A", "B", "C", "D"}
    assert out.count("predicted") == 12
