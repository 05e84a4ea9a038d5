"""Torch models built from specs: names and shapes are the spec's, forward passes run, ties hold.

Expected shapes are typed here from the spec files (``nn.Linear`` stores ``fan_out x fan_in``,
``nn.Embedding`` ``vocab x dim``), not read back from :func:`paramcalc.models.parameter_shapes`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

torch = pytest.importorskip("torch")

import paramcalc  # noqa: E402
from paramcalc.models import (  # noqa: E402
    Attention,
    ChainModel,
    LayerNorm,
    RMSNorm,
    TransformerModel,
    build_model,
    is_chain,
    is_transformer,
    parameter_shapes,
    set_attention_scales,
)
from tests.conftest import EXAMPLES  # noqa: E402


def small_gpt(**overrides: object) -> dict:
    """examples/gpt.yaml's structure with 2 blocks, a small vocabulary and context."""
    attn = {"name": "attn", "kind": "attention", "d_model": "d_model", "n_heads": "n_heads",
            "d_head": "d_head", "bias": True}
    mlp = {"name": "mlp", "kind": "mlp", "d_model": "d_model", "expansion": 4, "bias": True}
    attn.update(overrides.pop("attn", {}))  # type: ignore[arg-type]
    mlp.update(overrides.pop("mlp", {}))  # type: ignore[arg-type]
    norm = overrides.pop("norm", "layernorm")
    spec = {
        "name": "gpt-small",
        "widths": {"vocab": 50, "ctx": 16, "d_model": {"base": 32}, "n_heads": {"base": 2},
                   "d_head": 16, "n_layers": 2},
        "activation": "gelu",
        "layers": [
            {"name": "wte", "kind": "embedding", "vocab": "vocab", "dim": "d_model"},
            {"name": "wpe", "kind": "embedding", "vocab": "ctx", "dim": "d_model"},
            {"name": "blocks", "repeat": "n_layers", "layers": [
                {"name": "ln_1", "kind": norm, "dim": "d_model"},
                attn,
                {"name": "ln_2", "kind": norm, "dim": "d_model"},
                mlp,
            ]},
            {"name": "ln_f", "kind": norm, "dim": "d_model"},
            {"name": "lm_head", "fan_in": "d_model", "fan_out": "vocab", "tie": "wte"},
        ],
    }
    spec.update(overrides)
    return spec


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


# Names and shapes ---------------------------------------------------------------------------------
MLP_SHAPES = {
    "fc1.weight": (64, 3072), "fc1.bias": (64,),
    "fc2.weight": (64, 64), "fc2.bias": (64,),
    "head.weight": (10, 64),
}
CLASSIFIER_SHAPES = {
    "embed.weight": (1000, 32),
    "fc1.weight": (128, 32), "fc1.bias": (128,),
    "fc2.weight": (32, 128), "fc2.bias": (32,),
    "head.weight": (20, 32),
}


@pytest.mark.parametrize(("example", "widths", "expected"), [
    ("mlp.yaml", {"d": 64}, MLP_SHAPES),
    ("classifier.yaml", {"d": 32}, CLASSIFIER_SHAPES),
])
def test_chain_parameters_are_the_spec_tensors(example, widths, expected):
    spec = paramcalc.load_spec(EXAMPLES / example)
    model = build_model(spec, widths)
    assert isinstance(model, ChainModel)
    assert shapes(model) == expected
    assert list(shapes(model)) == [t.name for t in spec.tensors]  # spec order
    assert parameter_shapes(spec, widths) == expected


def test_gpt_example_parameters_are_the_spec_tensors():
    data = yaml.safe_load((EXAMPLES / "gpt.yaml").read_text(encoding="utf-8"))
    data["widths"].update({"vocab": 97, "ctx": 8})  # fixed widths: changed in the spec
    spec = paramcalc.load_spec(data)
    widths = {"d_model": 128, "n_heads": 2}
    model = build_model(spec, widths)
    assert isinstance(model, TransformerModel)
    got = shapes(model)
    assert set(got) == {t.name for t in spec.tensors}
    assert len(got) == 2 + 12 * 16 + 2  # wte, wpe; per block 4 norm + 8 attn + 4 mlp; ln_f
    assert got["wte.weight"] == (97, 128)
    assert got["wpe.weight"] == (8, 128)
    assert got["blocks.11.attn.q.weight"] == (128, 128)  # n_heads * d_head = 2 * 64
    assert got["blocks.3.attn.o.bias"] == (128,)
    assert got["blocks.0.mlp.fc.weight"] == (512, 128)
    assert got["blocks.0.mlp.proj.weight"] == (128, 512)
    assert got["blocks.5.ln_2.weight"] == got["ln_f.bias"] == (128,)
    assert "lm_head.weight" not in got  # tied: listed once, under its owner
    assert parameter_shapes(spec, widths) == got


def test_submodules_are_the_spec_layers():
    model = build_model(small_gpt(), {"d_model": 64, "n_heads": 4})
    assert isinstance(model.get_submodule("wte"), torch.nn.Embedding)
    assert isinstance(model.get_submodule("blocks.1.attn"), Attention)
    q = model.get_submodule("blocks.0.attn.q")
    assert isinstance(q, torch.nn.Linear) and (q.in_features, q.out_features) == (64, 64)
    ln = model.get_submodule("blocks.1.ln_2")
    assert isinstance(ln, LayerNorm) and ln.bias is not None
    assert model.get_submodule("blocks.1.mlp.fc").out_features == 256
    assert model.get_submodule("blocks.0.attn").n_heads == 4


def test_tied_readout_shares_the_embedding_parameter():
    model = build_model(small_gpt())
    wte, head = model.get_submodule("wte"), model.get_submodule("lm_head")
    assert head.weight is wte.weight
    with torch.no_grad():
        wte.weight[3].fill_(0.5)
    assert torch.equal(head.weight[3], torch.full((32,), 0.5))
    logits = model(torch.randint(0, 50, (2, 5)))
    logits.sum().backward()
    assert wte.weight.grad is not None and head.weight.grad is wte.weight.grad


def test_untied_readout_has_its_own_weight():
    spec = small_gpt()
    spec["layers"][-1] = {"name": "lm_head", "fan_in": "d_model", "fan_out": "vocab"}
    model = build_model(spec)
    assert shapes(model)["lm_head.weight"] == (50, 32)
    assert model.get_submodule("lm_head").weight is not model.get_submodule("wte").weight


def test_tie_to_a_later_layer_lists_the_owner():
    spec = {"name": "rev", "widths": {"v": 20, "d": {"base": 8}}, "layers": [
        {"name": "emb", "kind": "embedding", "vocab": "v", "dim": "d", "tie": "head"},
        {"name": "mid", "fan_in": "d", "fan_out": "d"},
        {"name": "head", "fan_in": "d", "fan_out": "v"},
    ]}
    model = build_model(spec).to(torch.float64)
    assert shapes(model) == {"mid.weight": (8, 8), "head.weight": (20, 8)}
    assert model.get_submodule("emb").weight is model.get_submodule("head").weight
    assert model.get_submodule("emb").weight.dtype == torch.float64
    model(torch.tensor([1, 2])).sum().backward()
    assert model.get_parameter("head.weight").grad[1].abs().sum() > 0  # through the embedding use


@pytest.mark.parametrize("owner_first", [True, False])
def test_ties_survive_meta_to_empty(owner_first):
    """Build on the meta device (no memory, no init), materialise: tied weights stay one tensor."""
    if owner_first:
        spec = small_gpt()
        owner, user = "wte", "lm_head"
    else:
        spec = {"name": "rev", "widths": {"v": 20, "d": {"base": 8}}, "layers": [
            {"name": "emb", "kind": "embedding", "vocab": "v", "dim": "d", "tie": "head"},
            {"name": "mid", "fan_in": "d", "fan_out": "d"},
            {"name": "head", "fan_in": "d", "fan_out": "v"},
        ]}
        owner, user = "head", "emb"
    reference = shapes(build_model(spec))
    model = build_model(spec, device="meta").to_empty(device="cpu")
    assert shapes(model) == reference  # same names: the tied tensor listed once, under its owner
    weight = model.get_submodule(owner).weight
    assert model.get_submodule(user).weight is weight and weight.device.type == "cpu"
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    x = torch.randint(0, 20, (2, 5)) if owner_first else torch.tensor([1, 2])
    model(x).sum().backward()
    grad = model.get_parameter(f"{owner}.weight").grad
    assert grad is not None and model.get_submodule(user).weight.grad is grad
    model = model.double()
    assert model.get_submodule(user).weight is model.get_submodule(owner).weight
    assert model.get_submodule(user).weight.dtype == torch.float64


def test_variants_fused_gated_rmsnorm():
    spec = small_gpt(attn={"fused": True, "bias": False, "names": {"qkv": "c_attn", "o": "c_proj"}},
                     mlp={"gated": True, "bias": False}, norm="rmsnorm")
    spec["activation"] = "silu"
    model = build_model(spec, {"d_model": 64, "n_heads": 4})
    got = shapes(model)
    assert set(got) == {t.name for t in paramcalc.load_spec(spec).tensors}
    assert got["blocks.0.attn.c_attn.weight"] == (3 * 64, 64)
    assert got["blocks.0.mlp.gate.weight"] == (256, 64)
    assert "blocks.0.ln_1.bias" not in got
    assert isinstance(model.get_submodule("ln_f"), RMSNorm)
    out = model(torch.randint(0, 50, (2, 7)))
    assert out.shape == (2, 7, 50) and torch.isfinite(out).all()


# Forward passes -----------------------------------------------------------------------------------
def test_mlp_forward_is_relu_chain():
    model = build_model(paramcalc.load_spec(EXAMPLES / "mlp.yaml"), {"d": 16})
    x = torch.randn(4, 3072)
    fc1, fc2, head = (model.get_submodule(n) for n in ("fc1", "fc2", "head"))
    expected = head(torch.relu(fc2(torch.relu(fc1(x)))))  # no activation after the last layer
    torch.testing.assert_close(model(x), expected)


def test_chain_with_norm_and_sparse_first_layer():
    spec = {
        "name": "c", "activation": "tanh",
        "widths": {"v": 11, "d": {"base": 8}, "k": 3},
        "layers": [
            {"name": "inp", "fan_in": "v", "fan_out": "d", "input": "sparse", "bias": True},
            {"name": "ln", "kind": "rmsnorm", "dim": "d", "bias": True},
            {"name": "out", "fan_in": "d", "fan_out": "k"},
        ],
    }
    model = build_model(spec, {"d": 12})
    assert shapes(model) == {"inp.weight": (12, 11), "inp.bias": (12,), "ln.weight": (12,),
                             "ln.bias": (12,), "out.weight": (3, 12)}
    ids = torch.tensor([0, 4, 10])
    one_hot = torch.nn.functional.one_hot(ids, 11).float()
    torch.testing.assert_close(model(ids), model(one_hot))  # token ids read columns
    inp, ln, out = (model.get_submodule(n) for n in ("inp", "ln", "out"))
    torch.testing.assert_close(model(one_hot), out(torch.tanh(ln(inp(one_hot)))))


def test_classifier_reads_token_ids():
    model = build_model(paramcalc.load_spec(EXAMPLES / "classifier.yaml"), {"d": 16})
    embed, fc1 = model.get_submodule("embed"), model.get_submodule("fc1")
    ids = torch.tensor([1, 999])
    out = model(ids)
    assert out.shape == (2, 20)
    h = fc1(embed(ids))  # no activation on the embedding itself
    expected = model.get_submodule("head")(torch.relu(model.get_submodule("fc2")(torch.relu(h))))
    torch.testing.assert_close(out, expected)


def test_transformer_is_causal_and_uses_positions():
    torch.manual_seed(0)
    model = build_model(small_gpt())
    ids = torch.randint(0, 50, (1, 6))
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1) % 50
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the past does not see the future
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    same = torch.full((1, 4), 7)
    out = model(same)
    assert not torch.allclose(out[0, 1], out[0, 2])  # equal tokens at different positions
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_attention_scale_and_recorded_logits():
    torch.manual_seed(1)
    spec = paramcalc.load_spec(small_gpt())
    widths = {"d_model": 128, "n_heads": 8}
    model = build_model(spec, widths)
    attn = model.get_submodule("blocks.0.attn")
    assert attn.scale == pytest.approx(1 / 16**0.5)  # default: SP's 1/sqrt(d_head)
    d = paramcalc.derive(spec, "spectral", "adam")
    set_attention_scales(model, d.evaluate_constants(widths))
    assert attn.scale == pytest.approx(1 / 16)
    ids = torch.randint(0, 50, (2, 9))
    fast = model(ids)
    for m in model.attention_layers().values():
        m.record_logits = True
    recorded = model(ids)
    torch.testing.assert_close(recorded, fast, rtol=1e-5, atol=1e-5)
    assert attn.last_logits.shape == (2, 8, 9, 9)
    rms = attn.last_logit_rms.item()
    assert rms > 0
    attn.scale *= 3
    model(ids)  # block 0's input does not depend on its own scale
    assert attn.last_logit_rms.item() == pytest.approx(3 * rms, rel=1e-5)
    with pytest.raises(KeyError, match="blocks.0.attn.scale"):
        set_attention_scales(model, {})


# Predicates and errors ----------------------------------------------------------------------------
def test_family_predicates():
    mlp = paramcalc.load_spec(EXAMPLES / "mlp.yaml")
    gpt = paramcalc.load_spec(EXAMPLES / "gpt.yaml")
    assert is_chain(mlp) and not is_transformer(mlp)
    assert is_transformer(gpt) and not is_chain(gpt)


def test_neither_family_is_a_spec_error():
    spec = {"name": "broken", "widths": {"d": {"base": 8}},
            "layers": [{"name": "a", "fan_in": 3, "fan_out": "d"},
                       {"name": "b", "fan_in": "2*d", "fan_out": 4}]}
    assert not is_chain(spec) and not is_transformer(spec)
    with pytest.raises(paramcalc.SpecError) as info:
        build_model(spec)
    text = str(info.value)
    assert "neither" in text and "fan_in 2*d" in text and "attention" in text


def test_bad_widths_are_spec_errors():
    spec = paramcalc.load_spec(EXAMPLES / "mlp.yaml")
    with pytest.raises(paramcalc.SpecError, match="unknown width symbol"):
        build_model(spec, {"width": 8})
    with pytest.raises(paramcalc.SpecError, match=r"width 'n_layers' is fixed at 2 .*declare it scaling"):
        build_model(paramcalc.load_spec(small_gpt()), {"n_layers": 3})
    halves = {"name": "h", "widths": {"d": {"base": 8}},
              "layers": [{"name": "a", "fan_in": "d", "fan_out": "d/2"}]}
    assert shapes(build_model(halves, {"d": 10})) == {"a.weight": (5, 10)}
    with pytest.raises(paramcalc.SpecError, match="positive integer"):
        build_model(halves, {"d": 9})


def test_layer_name_clashing_with_module_attribute():
    spec = {"name": "clash", "widths": {"d": {"base": 8}},
            "layers": [{"name": "forward", "fan_in": "d", "fan_out": "d"}]}
    with pytest.raises(paramcalc.SpecError, match="forward"):
        build_model(spec)


def test_derive_path_does_not_import_torch():
    code = ("import sys, paramcalc; paramcalc.derive('examples/gpt.yaml', 'mup', 'adam'); "
            "from paramcalc.cli import main; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_sparse_input_linear_is_a_module_call():
    """Token ids into a linear layer read columns, through a module call: forward hooks (the
    emitted ``apply_multipliers``, the verifier's recorders) see and may change its output."""
    spec = {"name": "s", "widths": {"v": 11, "d": {"base": 8}},
            "layers": [{"name": "emb", "fan_in": "v", "fan_out": "d", "input": "sparse", "bias": True},
                       {"name": "out", "fan_in": "d", "fan_out": 3}]}
    model = build_model(spec)
    ids = torch.tensor([0, 3, 10])
    layer = model.get_submodule("emb")
    expected = layer.weight.t()[ids] + layer.bias
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(out) or 2 * out)
    with torch.no_grad():
        doubled = model(ids)
    handle.remove()
    assert torch.equal(seen[0], expected.detach())
    with torch.no_grad():
        plain = model(ids)
        assert torch.allclose(model.get_submodule("out")(2 * torch.relu(expected)), doubled)
        assert not torch.allclose(plain, doubled)
