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
    assert set(data["curves"]) == {"appendix-mup", "appendix-ntp", "features", "spectral", "mup"}
    assert data["widths"] == [16, 32] and data["n0"] == 3072 and data["lr"] == 0.1
    for curve in data["curves"].values():
        assert set(curve) >= {"A", "B", "C", "D", "loss", "label"}
    assert out.count("predicted") == 20


def test_figure2_paramcalc_features_trains_as_appendix_a(tmp_path):
    """paramcalc's spectral rule with ``init: features``, trained by ``paramcalc.verify``, measures
    what App. A's constants typed into plain torch measure (examples/appendix_a.py). Both draw their
    weights from one generator seeded by the seed, in layer order, so they start from the same
    network; the rule's default (the min) does not."""
    run("figure2.py", "--widths", "16,64", "--steps", "20", "--seeds", "1", "--device", "cpu",
        "--curves", "appendix-mup,features,spectral", "--out", str(tmp_path / "f2.png"),
        "--json", str(tmp_path / "f2.json"))
    curves = json.loads((tmp_path / "f2.json").read_text())["curves"]
    for letter in "ABCD":
        assert curves["features"][letter]["mean"] == pytest.approx(curves["appendix-mup"][letter]["mean"],
                                                                   rel=1e-3), letter
    spectral, appendix = curves["spectral"]["A"]["mean"][0], curves["appendix-mup"]["A"]["mean"][0]
    assert spectral != pytest.approx(appendix, rel=0.1)
