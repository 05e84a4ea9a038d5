"""Depth: a repeat whose count scales, and the factors derived for it (paramcalc.engine.depth).

The expected factors are written out here from their sources, not computed by paramcalc:
CompleteP's Table 1 (Dey et al. 2025, arXiv:2505.01618), its reference code (EleutherAI
nanoGPT-mup, branch ``completep``, ``model.py``: ``Block.residual_scaling`` and
``configure_optimizers``), and Tensor Programs VI (Yang et al. 2023: depth-muP with SGD keeps the
learning rate, branches times 1/sqrt(L)).
"""

from __future__ import annotations

import math

import pytest

import paramcalc
from paramcalc.errors import SpecError
from paramcalc.symbolic import theta_exponent

GPT = "examples/gpt_depth.yaml"
L_BASE, D_BASE = 4, 64
DEPTHS = (4, 8, 16, 32)
WIDTH_MULTS = (1, 2, 4)


def _widths(d, m_n: int, depth: int) -> dict[str, int]:
    return paramcalc.widths_at(d, d_model=D_BASE * m_n) | {"n_layers": depth}


def _at(d, m_n: int, depth: int) -> dict[str, dict[str, float]]:
    return d.evaluate(_widths(d, m_n, depth))


def _group(name: str) -> str:
    """nanoGPT-mup's optimizer groups, by its own test on the parameter name."""
    if name in ("wte.weight", "wpe.weight"):
        return "emb"
    if name.startswith("ln_f."):
        return "final_ln"
    if ".ln_" in name:
        return "hidden_ln"
    return "hidden_weight" if name.endswith(".weight") else "hidden_bias"


def _recipe(group: str, m_n: float, m_l: float, alpha: float) -> dict[str, float]:
    """``configure_optimizers`` of the completep branch (depth_alpha_enabled, mup_enabled):
    ``lr_scale`` and ``weight_decay`` (in units of the base weight decay) per group; its one
    ``adam_eps`` is scaled by ``(1 / m_N) * m_L ** -alpha`` for every group."""
    depth_lr = m_l ** (alpha - 1)
    table = {
        "emb": (1.0, 1.0),
        "hidden_ln": (depth_lr, 0.0),
        "hidden_weight": (depth_lr / m_n, m_n),  # weight_decay / width_lr_scaling
        "hidden_bias": (depth_lr, 0.0),
        "final_ln": (1.0, 0.0),
    }
    lr, wd = table[group]
    return {"lr": lr, "weight_decay": wd, "eps": m_l ** -alpha / m_n}


@pytest.mark.parametrize("alpha", [1, 0.5])
def test_nanogpt_mup_completep_recipe(alpha):
    """Every tensor's lr, weight decay and (inside blocks) epsilon factor, and the branch multiplier,
    at width multipliers 1, 2, 4 and depths 4..32, against the completep branch's recipe."""
    d = paramcalc.derive(GPT, "mup", "adamw", decay=("weight", "embedding"), depth_alpha=alpha)
    for m_n in WIDTH_MULTS:
        for depth in DEPTHS:
            m_l = depth / L_BASE
            values = _at(d, m_n, depth)
            residual = d.evaluate_constants(_widths(d, m_n, depth))
            assert residual["blocks.residual"] == pytest.approx(m_l ** -alpha)  # Block.residual_scaling
            for name, got in values.items():
                want = _recipe(_group(name), m_n, m_l, alpha)
                assert got["lr"] == pytest.approx(want["lr"]), (name, m_n, depth)
                assert got["weight_decay"] == pytest.approx(want["weight_decay"]), (name, m_n, depth)
                if name.startswith("blocks."):
                    assert got["eps"] == pytest.approx(want["eps"]), (name, m_n, depth)
                else:
                    # The recipe has one AdamW epsilon, so it scales the embeddings' and final norm's
                    # by m_L^-alpha too; their gradients carry no branch multiplier, and paramcalc
                    # gives them muP's width factor only (per-tensor eps groups).
                    assert got["eps"] == pytest.approx(1 / m_n), (name, m_n, depth)


def test_init_and_output_multiplier_as_mup_at_every_depth():
    """Init stds: hidden ``init_std / sqrt(m_N)``, embeddings a constant, no depth factor; the
    tied readout computes with ``1 / m_N`` (the recipe's ``mup_output_alpha / m_N``)."""
    d = paramcalc.derive(GPT, "mup", "adamw")
    base = _at(d, 1, L_BASE)
    for m_n in WIDTH_MULTS:
        for depth in DEPTHS:
            values = _at(d, m_n, depth)
            for name, got in values.items():
                if not base[name]["init_std"]:  # constant inits (zero biases, unit gains) stay so
                    assert got["init_std"] == 0, name
                    continue
                ratio = got["init_std"] / base[name]["init_std"]
                assert ratio == pytest.approx(1 / math.sqrt(m_n) if d[name].role == "hidden" else 1.0), name
            tied = d.evaluate_tied(_widths(d, m_n, depth))
            assert tied["lm_head"]["multiplier"] == pytest.approx(1 / m_n)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "lion", "muon"])
@pytest.mark.parametrize("alpha", [1, 0.5])
def test_completep_table1_depth_exponents(optimizer, alpha):
    """CompleteP Table 1, in exponents of L: inside blocks lr L^(alpha-1) and (with an epsilon)
    eps L^-alpha; outside blocks no depth factor. A scale-free step (Adam, Lion, Muon) gets the same."""
    d = paramcalc.derive(GPT, "mup", optimizer, depth_alpha=alpha)
    depth = d.spec.depth_symbols
    for name, p in d.items():
        lr, eps = theta_exponent(p.lr, depth), theta_exponent(p.eps, depth)
        inside = name.startswith("blocks.")
        assert float(lr) == ((alpha - 1) if inside else 0), name
        has_eps = d.law(name).has_eps
        assert float(eps) == (-alpha if inside and has_eps else 0), name


@pytest.mark.parametrize("alpha, exponent", [(0.5, 0), (1, 1), (0.75, 0.5)])
def test_sgd_depth_factor(alpha, exponent):
    """SGD's step scales with the gradient, which the branch multiplier scales by m_L^-alpha: the lr
    factor inside blocks is m_L^(2 alpha - 1). At alpha = 1/2 that is 1: TP VI's depth-muP with SGD."""
    d = paramcalc.derive(GPT, "mup", "sgd", depth_alpha=alpha)
    for name, p in d.items():
        got = theta_exponent(p.lr, d.spec.depth_symbols)
        assert float(got) == (exponent if name.startswith("blocks.") else 0), name


def test_spectral_takes_the_same_depth_factors():
    spectral = paramcalc.derive(GPT, "spectral", "adam", depth_alpha=0.5)
    flat = paramcalc.derive(GPT, "spectral", "adam", depth_alpha="none")
    w = {"n_layers": 16}
    a, b = spectral.evaluate(w), flat.evaluate(w)
    for name in a:
        want = 0.5 if name.startswith("blocks.") else 1.0  # (16 / 4) ** (1/2 - 1)
        assert a[name]["lr"] == pytest.approx(b[name]["lr"] * want), name
        assert a[name]["init_std"] == b[name]["init_std"]


def test_no_depth_scaling_is_the_width_rule():
    flat = paramcalc.derive(GPT, "mup", "adam", depth_alpha="none")
    assert flat.depth_alpha is None
    assert flat.constants["blocks.residual"] == 1
    assert all(theta_exponent(p.lr, flat.spec.depth_symbols) == 0 for p in flat.values())


def test_default_alpha_is_completep_and_width_exponents_ignore_depth():
    d = paramcalc.derive(GPT, "mup", "adam")
    assert d.depth_alpha == 1
    fixed = paramcalc.derive("examples/gpt.yaml", "mup", "adam")
    assert fixed.depth_alpha is None and "blocks.residual" not in fixed.constants
    # The width exponents of a tensor inside a block are muP's, whatever the depth factor.
    exps = d["blocks.0.attn.q.weight"].exponents
    assert {k: float(v) for k, v in exps.items()} == {"init_std": -0.5, "lr": -1, "multiplier": 0}


@pytest.mark.parametrize("alpha", [0.4, 1.5, "abc", -1])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="from 1/2 to 1"):
        paramcalc.derive(GPT, "mup", "adam", depth_alpha=alpha)


def test_alpha_without_scaling_depth():
    with pytest.raises(ValueError, match="no repeat .* scales with depth"):
        paramcalc.derive("examples/mlp.yaml", "mup", "adam", depth_alpha=1)


# The spec ------------------------------------------------------------------------------------


def test_spec_at_depth_expands_blocks_and_keeps_the_base():
    spec = paramcalc.load_spec(GPT)
    assert [(b.name, b.width, b.count) for b in spec.depth_blocks] == [("blocks", "n_layers", 4)]
    deep = spec.at_depth({"n_layers": 16})
    assert deep.depth_blocks[0].count == 16 and deep.widths["n_layers"].value == 4
    assert sum(t.name.endswith("attn.q.weight") for t in deep.tensors) == 16
    assert spec.at_depth({"n_layers": 4}) is spec
    # Width and depth are separate axes: widths in proportion leave the depth as it is.
    assert paramcalc.widths_at(spec, d_model=256)["n_layers"] == 4
    assert spec.widths["n_layers"].symbol not in spec.scaling_symbols


def _spec(layers, widths=None):
    return {"name": "s", "widths": widths or {"d": {"base": 8}, "L": {"base": 2}}, "layers": layers}


def test_a_depth_is_no_dimension():
    with pytest.raises(SpecError, match="uses L, which counts the blocks .* a depth is no dimension"):
        paramcalc.load_spec(_spec([{"name": "b", "repeat": "L", "layers": [{"name": "fc", "fan_in": "d",
                                                                              "fan_out": "L"}]}]))


def test_one_scaling_repeat_per_nest():
    inner = {"name": "inner", "repeat": "L", "layers": [{"name": "fc", "fan_in": "d", "fan_out": "d"}]}
    with pytest.raises(SpecError, match="one scaling repeat count per nest"):
        paramcalc.load_spec(_spec([{"name": "outer", "repeat": "L", "layers": [inner]}]))


def test_unknown_repeat_count_names_the_widths():
    with pytest.raises(SpecError, match=r"expected an integer or a width symbol .*got 'K'"):
        paramcalc.load_spec(_spec([{"name": "b", "repeat": "K", "layers": [{"name": "fc", "fan_in": "d",
                                                                              "fan_out": "d"}]}]))


# Emitted code and models ---------------------------------------------------------------------


def _emitted(d, target: str, widths=None) -> dict:
    from paramcalc.emit import emit

    namespace: dict = {}
    exec(compile(emit(d, target, widths), f"<{target}>", "exec"), namespace)  # noqa: S102
    return namespace


def test_emitted_torch_trains_a_deep_model_with_the_recipe():
    """The file emitted for L = 16 at 2x width: its groups' learning rates and epsilons are the
    recipe's, and its residual scale reaches the model paramcalc builds."""
    import torch

    from paramcalc.models import build_model

    d = paramcalc.derive(GPT, "mup", "adamw", depth_alpha=0.5)
    widths = _widths(d, 2, 16)
    pc = _emitted(d, "torch", widths)
    assert pc["DEPTHS"] == {"n_layers": 16}
    assert pc["residual_scales"](widths) == {"blocks.residual": pytest.approx(0.5)}
    model = build_model(d.spec, widths)
    pc["init_parameters"](model, widths)
    pc["apply_multipliers"](model, widths)
    groups = pc["param_groups"](model, 1.0, widths, eps=1e-8)
    for group in groups:
        for name in group["names"]:
            want = _recipe(_group(name), 2, 4, 0.5)
            assert group["lr"] == pytest.approx(want["lr"]), name
            if name.startswith("blocks."):
                assert group["eps"] == pytest.approx(1e-8 * want["eps"]), name
    assert sum(len(g["names"]) for g in groups) == len(list(model.parameters()))
    paramcalc.models.set_residual_scales(model, pc["residual_scales"](widths))
    assert model.residual_scales == {"blocks.residual": pytest.approx(0.5)}
    # The multiplier acts in the forward pass: at 0 the blocks no longer change the output.
    ids = torch.randint(0, 64, (2, 8))
    model.residual_scales["blocks.residual"] = 0.0
    before = model(ids)
    with torch.no_grad():
        model.get_submodule("blocks.3.mlp.fc").weight.mul_(3.0)
    assert torch.equal(before, model(ids))
    model.residual_scales["blocks.residual"] = 0.5
    assert not torch.allclose(before, model(ids))


def test_emitted_code_refuses_another_depth():
    d = paramcalc.derive(GPT, "mup", "adam")
    pc = _emitted(d, "torch")
    with pytest.raises(ValueError, match=r"lists the blocks of n_layers = 4; emit it again .*n_layers=8"):
        pc["scales"]({"n_layers": 8})
    # Width and depth are separate: widths_at scales the widths and leaves the depth.
    assert pc["widths_at"](d_model=256)["n_layers"] == 4


def test_emitted_jax_lists_the_blocks_and_their_scales():
    pytest.importorskip("jax")
    d = paramcalc.derive(GPT, "mup", "adam", depth_alpha=1)
    widths = {"n_layers": 8}
    ns = _emitted(d, "jax", widths)
    assert ns["residual_scales"](widths) == {"blocks.residual": pytest.approx(0.5)}
    assert sum(name.startswith("blocks.7.") for name in ns["PARAMETERS"]) > 0
    want = d.at_depth(widths).evaluate(widths)
    for name, s in ns["scales"](widths).items():
        assert s["eps"] == pytest.approx(want[name]["eps"]), name


def test_apply_sets_the_residual_scale_or_says_where_it_goes():
    import torch

    import paramcalc.torch as pt
    from paramcalc.errors import UsageError
    from paramcalc.models import build_model

    d = paramcalc.derive(GPT, "mup", "adam")
    widths = {"n_layers": 8}
    model = pt.apply(build_model(d.spec, widths), d, widths)
    assert model.residual_scales == {"blocks.residual": pytest.approx(0.5)}

    class Own(torch.nn.Module):  # a user's model: paramcalc cannot see its residual connections
        def __init__(self, inner):
            super().__init__()
            self.wte, self.wpe, self.blocks, self.ln_f = inner.wte, inner.wpe, inner.blocks, inner.ln_f
            self.lm_head = inner.lm_head

    with pytest.raises(UsageError, match=r"x = x \+ scale \* branch\(x\)"):
        pt.apply(Own(model), d, widths)


def test_derivation_at_depth_relabels_without_deriving():
    d = paramcalc.derive(GPT, "mup", "adam", depth_alpha=0.5)
    deep = d.at_depth({"n_layers": 12})
    assert deep is d.at_depth({"n_layers": 12}) and d.at_depth({"n_layers": 4}) is d
    assert len(deep) == len(d) + 8 * 16  # 16 tensors per block
    assert deep["blocks.11.attn.o.weight"].lr == d["blocks.0.attn.o.weight"].lr
    assert deep.constants["blocks.residual"] == d.constants["blocks.residual"]
    assert "blocks.11.attn.scale" in deep.constants and deep.depth_alpha == d.depth_alpha
