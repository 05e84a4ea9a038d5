"""Richer structure: embeddings, attention, MLP blocks, norms, repeat blocks, tied weights."""

from __future__ import annotations

import pytest
import sympy
from sympy import sqrt

import paramcalc
from paramcalc import SpecError, load_spec
from paramcalc.symbolic import width_symbol
from tests.conftest import EXAMPLES

d, n_heads, d_head, vocab = (width_symbol(s) for s in ("d", "n_heads", "d_head", "vocab"))


def gpt(**block_overrides):
    attn = {"name": "attn", "kind": "attention", "d_model": "d", "n_heads": "n_heads",
            "d_head": "d_head", "bias": True}
    attn.update(block_overrides)
    return {
        "name": "tiny-gpt",
        "widths": {"vocab": 100, "ctx": 16, "d": {"base": 64}, "n_heads": 4,
                   "d_head": {"base": 16}, "L": 2},
        "activation": "gelu",
        "layers": [
            {"name": "wte", "kind": "embedding", "vocab": "vocab", "dim": "d"},
            {"name": "wpe", "kind": "embedding", "vocab": "ctx", "dim": "d"},
            {"name": "blocks", "repeat": "L", "layers": [
                {"name": "ln_1", "kind": "layernorm", "dim": "d"},
                attn,
                {"name": "ln_2", "kind": "rmsnorm", "dim": "d"},
                {"name": "mlp", "kind": "mlp", "d_model": "d", "expansion": 4},
            ]},
            {"name": "ln_f", "kind": "layernorm", "dim": "d"},
            {"name": "lm_head", "fan_in": "d", "fan_out": "vocab", "tie": "wte"},
        ],
    }


def test_expansion_names_and_shapes():
    spec = load_spec(gpt())
    names = [t.name for t in spec.tensors]
    assert names[:2] == ["wte.weight", "wpe.weight"]
    block = [n for n in names if n.startswith("blocks.1.")]
    assert block == [
        "blocks.1.ln_1.weight", "blocks.1.ln_1.bias",
        "blocks.1.attn.q.weight", "blocks.1.attn.q.bias",
        "blocks.1.attn.k.weight", "blocks.1.attn.k.bias",
        "blocks.1.attn.v.weight", "blocks.1.attn.v.bias",
        "blocks.1.attn.o.weight", "blocks.1.attn.o.bias",
        "blocks.1.ln_2.weight",  # rmsnorm: no bias
        "blocks.1.mlp.fc.weight", "blocks.1.mlp.proj.weight",
    ]
    assert "lm_head.weight" not in names  # tied: the readout uses wte.weight
    wte = spec.tensor("wte.weight")
    assert (wte.layout, wte.shape, wte.d_in, wte.role) == ("in_out", (vocab, d), 1, "input")
    q = spec.tensor("blocks.0.attn.q.weight")
    assert q.shape == (n_heads * d_head, d) and q.role == "hidden"
    assert spec.tensor("blocks.0.mlp.fc.weight").shape == (4 * d, d)
    (use,) = wte.tied_uses
    assert (use.layer, use.role, use.d_in, use.fan_out) == ("lm_head", "output", d, vocab)
    kinds = {layer.name: layer.kind for layer in spec.layers}
    assert kinds["blocks.0.attn"] == "attention" and kinds["blocks.0.attn.q"] == "linear"
    assert spec.layer("lm_head").params == {"weight": "wte.weight"}


def test_fused_and_renamed_projections():
    spec = load_spec(gpt(fused=True, names={"qkv": "c_attn", "o": "c_proj"}))
    assert spec.tensor("blocks.0.attn.c_attn.weight").fan_out == 3 * n_heads * d_head
    assert spec.tensor("blocks.0.attn.c_proj.weight").fan_in == n_heads * d_head


def test_gated_mlp_and_explicit_d_ff():
    spec = load_spec({"name": "m", "widths": {"d": {"base": 32}},
                      "layers": [{"name": "mlp", "kind": "mlp", "d_model": "d", "d_ff": "3*d",
                                  "gated": True, "names": {"fc": "w1", "gate": "w3", "proj": "w2"}}]})
    assert [t.name for t in spec.tensors] == ["mlp.w1.weight", "mlp.w3.weight", "mlp.w2.weight"]
    assert spec.tensor("mlp.w2.weight").fan_in == 3 * width_symbol("d")


def test_gpt_example_size():
    spec = load_spec(EXAMPLES / "gpt.yaml")
    assert len([t for t in spec.tensors]) == 2 + 12 * 16 + 2
    assert len(spec.layers) > 12 * 10


@pytest.mark.parametrize(
    ("param", "scale"),
    [("spectral", 1 / d_head), ("mup", 4 / d_head), ("ntp", 1 / sqrt(d_head)), ("sp", 1 / sqrt(d_head))],
)
def test_attention_logit_scale(param, scale):
    derivation = paramcalc.derive(gpt(), param, "adam")
    assert derivation.constants["blocks.0.attn.scale"] == scale
    assert set(derivation.constants) == {"blocks.0.attn.scale", "blocks.1.attn.scale"}
    # at the base width muP's scale is SP's 1/sqrt(d_head)
    if param == "mup":
        assert derivation.evaluate_constants()["blocks.0.attn.scale"] == pytest.approx(1 / 4)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_tied_readout_under_mup_is_table8(opt):
    """The readout use of the embedding gets TP5 Table 8's output multiplier 1/m; its effective
    learning rate is exactly the untied readout's, and its init has the same Theta-exponent."""
    derivation = paramcalc.derive(gpt(), "mup", opt)
    ts = derivation.tied["lm_head"]
    assert ts.tensor == "wte.weight"
    assert ts.multiplier == 64 / d
    untied = gpt()
    untied["layers"][-1] = {"name": "lm_head", "fan_in": "d", "fan_out": "vocab"}
    readout = paramcalc.derive(untied, "mup", opt)["lm_head.weight"]
    assert sympy.simplify(ts.lr - readout.lr) == 0
    assert ts.init_exponent_gap == 0 and ts.rule_init_std == readout.init_std
    # The tensor itself keeps its embedding scales (Theta(1) init, muP input-layer lr).
    wte = derivation["wte.weight"]
    assert wte.init_std == 1 and wte.lr == (d / 64 if opt == "sgd" else 1)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_tied_readout_under_sp_keeps_embedding_init(opt):
    """SP has equal learning rates for both roles, so no multiplier: the readout inherits the
    embedding's Theta(1) init, half an order above its own rule (as GPT-2 ties weights)."""
    ts = paramcalc.derive(gpt(), "sp", opt).tied["lm_head"]
    assert ts.multiplier == 1 and ts.init_exponent_gap == sympy.Rational(1, 2)


def test_tied_uses_move_with_the_abc_symmetry():
    derivation = paramcalc.derive(gpt(), "mup", "sgd")
    shifted = derivation.shift({"wte.weight": 8})
    assert shifted.tied["lm_head"].multiplier == 8 * derivation.tied["lm_head"].multiplier
    assert shifted["wte.weight"].init_std == derivation["wte.weight"].init_std / 8


@pytest.mark.parametrize(
    ("mutate", "path", "expected"),
    [
        (lambda s: s["layers"][-1].update(fan_out="ctx"), "layers[4].tie", "stored shapes differ"),
        (lambda s: s["layers"][-1].update(tie="nope"), "layers[4].tie", "cannot tie 'lm_head' to 'nope'"),
        (lambda s: s["layers"][2].update(repeat="d"), "layers[0].dim", "a depth is no dimension"),
        (lambda s: s["layers"][2].update(repeat=0), "layers[2].repeat", "integer from 1 to 10000"),
        (lambda s: s["layers"][2]["layers"][1].update(d_head="dh"), "layers[2].layers[1].d_head",
         "undefined symbol 'dh'"),
        (lambda s: s["layers"][2]["layers"][1].update(heads=4), "layers[2].layers[1].heads",
         "unknown key"),
        (lambda s: s["layers"][2]["layers"][1].update(names={"qq": "x"}),
         "layers[2].layers[1].names.qq", "did you mean 'q'"),
        (lambda s: s["layers"][2]["layers"][3].update(expansion=0), "layers[2].layers[3].expansion",
         "greater than 0"),
        (lambda s: s["layers"][2]["layers"][0].update(kind="batchnorm"), "layers[2].layers[0].kind",
         "unknown layer kind"),
        (lambda s: s["layers"][2]["layers"].append({"name": "ln_1", "kind": "norm", "dim": "d"}),
         "layers[2].layers[4].name", "duplicate layer name 'blocks.0.ln_1'"),
    ],
)
def test_structure_errors(mutate, path, expected):
    spec = gpt()
    mutate(spec)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert f"{path}: " in str(info.value) and expected in str(info.value), str(info.value)


def test_tie_embedding_to_linear_of_same_storage():
    spec = load_spec({"name": "t", "widths": {"v": 50, "d": {"base": 8}},
                      "layers": [{"name": "head", "fan_in": "d", "fan_out": "v"},
                                 {"name": "emb", "kind": "embedding", "vocab": "v", "dim": "d",
                                  "tie": "head"}]})
    (use,) = spec.tensor("head.weight").tied_uses
    assert use.layer == "emb" and use.role == "input"


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_tie_owned_by_a_readout_with_a_multiplier(opt):
    """A use's multiplier acts on the stored tensor: when the owner itself carries a multiplier
    (muP table8 readout), the table8 derivation must equal the table3 one shifted into table8."""
    spec = {"name": "t", "widths": {"v": 50, "d": {"base": 8}},
            "layers": [{"name": "head", "fan_in": "d", "fan_out": "v"},
                       {"name": "emb", "kind": "embedding", "vocab": "v", "dim": "d", "tie": "head"}]}
    t3 = paramcalc.derive(spec, "mup", opt)
    t8 = paramcalc.derive(spec, "mup", opt, form="table8")
    theta = t8["head.weight"].multiplier / t3["head.weight"].multiplier
    moved = t3.shift({"head.weight": theta})
    assert sympy.simplify(moved.tied["emb"].multiplier - t8.tied["emb"].multiplier) == 0
    assert sympy.simplify(moved["head.weight"].init_std - t8["head.weight"].init_std) == 0
    # the embedding use computes with its Theta(1) table: multiplier * stored std is Theta(1)
    assert t8.tied["emb"].init_exponent_gap == 0
