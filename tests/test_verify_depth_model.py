"""verify across depth on a model paramcalc did not build: Hugging Face GPT-2 and Llama from their
configs (examples/hf_models.py), their block lists folded into a repeat whose count scales.

The blocks are read through hooks on the model's own list of blocks, and a block is run alone with
the arguments the model gave it (attention mask, Llama's rotary embeddings): the first test checks
that this replay is the model's own computation, so the measured slopes are the model's.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from examples import hf_models  # noqa: E402
from paramcalc.cli import app  # noqa: E402
from paramcalc.engine import derive  # noqa: E402
from paramcalc.infer import infer_spec  # noqa: E402
from paramcalc.verify.depth import verify_depth  # noqa: E402
from paramcalc.verify.depth_probe import ListProbe  # noqa: E402
from paramcalc.verify.model import apply_parametrization, build  # noqa: E402
from paramcalc.widths import widths_at  # noqa: E402


def deep_spec(name: str):
    widths = {**hf_models.WIDTHS[name], "n_layers": {"base": 4}}
    return infer_spec(getattr(hf_models, name), widths, name=name)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_block_run_alone_is_the_models_block(name):
    """Block k fed its input at init, with the arguments the model passed it, gives the next block's
    input (and the last block the stream where the blocks end), and the branch multiplier is on."""
    spec = deep_spec(name)
    d = derive(spec, "mup", "adam", depth_alpha="1/2")
    at = widths_at(spec, n_layers=4)
    d4 = d.at_depth(at)
    torch.manual_seed(0)
    model = build(d4, at, factory=getattr(hf_models, name), device=torch.device("cpu"), dtype=torch.float64)
    apply_parametrization(d4, model, at, lr=1e-3)
    probe = ListProbe(model, d4, "n_layers", at)
    x = torch.randint(0, at["vocab"], (2, 8), generator=torch.Generator().manual_seed(1))
    streams, end = probe.forward(x)
    assert sorted(streams) == [0, 2, 3]
    torch.testing.assert_close(probe.block(2, streams[2]), streams[3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(probe.block(3, streams[3]), end, rtol=1e-12, atol=1e-12)
    # The branches carry r = (L / L_base)^-1/2 = 1 at L = 4; at L = 16 the block's addition is half.
    d16 = d.at_depth(widths_at(spec, n_layers=16))
    assert float(d16.evaluate_constants(widths_at(spec, n_layers=16))[f"{probe.name}.residual"]) == 0.5


def test_gpt2_depth_mup_passes_and_no_depth_scaling_fails_naming_the_blocks():
    spec = deep_spec("gpt2")
    options = {"factory": hf_models.gpt2, "steps": 1}
    good = verify_depth(spec, "mup", "adam", depths=[2, 4, 8, 16], options={**options, "depth_alpha": "1/2"})
    assert good.passed, "\n".join(c.message for c in good.failures + good.inconclusive)
    by = {(c.quantity, c.subject): c for c in good.checks}
    assert by[("block_init", "transformer.h[last]")].slope.value == pytest.approx(-0.5, abs=0.1)
    assert by[("block_change", "transformer.h[first]")].slope.value == pytest.approx(-1, abs=0.15)
    bad = verify_depth(spec, "mup", "adam", depths=[2, 4, 8, 16], options={**options, "depth_alpha": "none"})
    failed = {(c.quantity, c.subject) for c in bad.failures}
    assert {("stream", "the stream"), ("dstream", "the stream")} <= failed
    assert {("block_change", f"transformer.h[{p}]") for p in ("first", "middle", "last")} <= failed


def test_command_line_takes_a_model(tmp_path):
    runner = CliRunner()
    out = tmp_path / "depth.json"
    args = ["verify", "--model", "examples.hf_models:llama", "--base",
            "d_model=64,n_heads=4,n_kv_heads=2,vocab=100,n_layers=4",
            "--scale", "d_model,n_heads,n_kv_heads,n_layers",
            "--depths", "2,4,8,16", "--depth-alpha", "none", "--steps", "1", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "model.layers[last]" in result.stdout and "FAIL" in result.stdout
    report = json.loads(out.read_text())
    assert report["depths"] == [2, 4, 8, 16] and any(not c["passed"] for c in report["checks"])


def test_a_model_whose_depth_does_not_scale_is_a_usage_error():
    result = CliRunner().invoke(app, ["verify", "--model", "examples.hf_models:gpt2", "--depths", "2,4,8"])
    assert result.exit_code == 2, result.output
    assert "--scale ...,n_layers" in result.output and "Traceback" not in result.output
