"""A chain whose repeat is ``residual: true``: a residual MLP, built, applied and verified across depth."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.models import build_model  # noqa: E402
from paramcalc.torch import apply  # noqa: E402
from paramcalc.verify.depth import verify_depth  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402

SPEC = str(EXAMPLES / "residual_mlp.yaml")


def test_each_block_adds_its_scaled_branch_to_the_stream():
    """x -> inp -> (x + r fc2(relu(fc1(ln(x))))) per block -> head, with r = (8/4)^-1, by hand."""
    d = paramcalc.derive(SPEC, "mup", "adam")
    model = apply(build_model(SPEC, {"n_layers": 8}), d, {"n_layers": 8},
                  generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = model.inp(x)
        for k in range(8):
            block = model.get_submodule(f"blocks.{k}")
            h = h + 0.5 * block.fc2(torch.relu(block.fc1(block.ln(h))))
        expected = model.head(h)
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert [n for n, _ in model.named_parameters()] == list(d.at_depth({"n_layers": 8}))


def test_a_depth_in_a_chain_must_be_residual():
    spec = paramcalc.load_spec(SPEC).model.model_dump(exclude_defaults=True)
    spec["layers"][1]["residual"] = False
    with pytest.raises(paramcalc.SpecError, match=r"'blocks' scales with depth .*add `residual: true`"):
        build_model(spec)


def test_a_residual_block_keeps_the_stream_width():
    spec = paramcalc.load_spec(SPEC).model.model_dump(exclude_defaults=True)
    spec["layers"][1]["layers"][2]["fan_out"] = "2*d"
    spec["layers"][2]["fan_in"] = "2*d"
    with pytest.raises(paramcalc.SpecError, match=r"maps width d to 2\*d; x \+ block\(x\) needs them equal"):
        build_model(spec)


def test_completep_passes_its_depth_checks_on_the_residual_mlp():
    """CompleteP (alpha = 1, the default) at L = 2..16: the stream's change Theta(1), each block's own
    change Theta(1/L), blocks at init L^-1 (after step 1: at width 64 the later steps' spread over
    seeds keeps their allowance above 0.2 at 12 seeds; benchmarks/RESULTS.md)."""
    report = verify_depth(SPEC, "mup", "adam", depths=[2, 4, 16], options={"steps": 1, "seeds": 12})
    assert report.passed, "\n".join(c.message for c in report.failures + report.inconclusive)
    by = {(c.quantity, c.subject, c.step): c for c in report.checks}
    assert by[("block_init", "blocks[first]", 0)].slope.value == pytest.approx(-1, abs=0.1)
    assert by[("block_change", "blocks[last]", 1)].slope.value == pytest.approx(-1, abs=0.15)
    # The first-step calculus through the branches predicts every slope at these depths (11 checks),
    # the stream at init's -0.29 among them, which its target check then reads as 0.
    calculus = [c for c in report.checks if c.kind == "calculus"]
    assert len(calculus) == 11 and all(c.verdict == "pass" for c in calculus)
    stream = next(c for c in report.checks if c.kind == "target" and c.quantity == "stream")
    assert stream.slope.value == pytest.approx(-0.29, abs=0.05)
    assert stream.corrected == pytest.approx(0, abs=0.05)


def test_no_depth_scaling_fails_on_the_residual_mlp():
    report = verify_depth(SPEC, "mup", "adam", depths=[2, 4, 16],
                          options={"steps": 1, "depth_alpha": "none"})
    failed = {c.subject for c in report.failures}
    assert not report.passed and {"the stream", "blocks[first]", "blocks[last]"} <= failed
    # The calculus predicts the failure (the stream grows like L^0.36 here, its change like L^1), and
    # no offset excuses a target without depth scaling.
    assert all(c.passed for c in report.checks if c.kind == "calculus" and c.step == 0)
    assert all(c.offset == 0 for c in report.checks)
