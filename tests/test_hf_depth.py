"""Depth on Hugging Face models built from their configs: a block count that scales is inferred as a
``repeat`` (paramcalc.infer.depth), derived with its depth factors, and applied by hooks on the
blocks' branches (paramcalc.infer.branches); measured on the live models, and audited."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from torch import nn  # noqa: E402

import paramcalc  # noqa: E402
from examples import hf_models  # noqa: E402
from paramcalc.errors import FactoryError  # noqa: E402
from paramcalc.infer.branches import install_branch_scales  # noqa: E402
from paramcalc.torch import apply, param_groups  # noqa: E402

#: factory -> the list of blocks its config's block count makes
LISTS = {"gpt2": "transformer.h", "llama": "model.layers", "vit": "vit.layers"}


def deep(name: str) -> dict:
    """The factory's widths with the block count scaling from a base of 2."""
    return {**hf_models.WIDTHS[name], "n_layers": {"base": 2}}


def at(name: str, layers: int) -> dict[str, int]:
    base = {k: (v["base"] if isinstance(v, dict) else v) for k, v in deep(name).items()}
    return base | {"n_layers": layers}


_SPECS: dict[str, paramcalc.Spec] = {}


def spec_of(name: str) -> paramcalc.Spec:
    if name not in _SPECS:
        _SPECS[name] = paramcalc.infer_spec(getattr(hf_models, name), deep(name), name=name)
    return _SPECS[name]


@pytest.mark.parametrize("name", list(LISTS))
def test_block_count_is_inferred_as_a_depth(name):
    spec = spec_of(name)
    [block] = spec.depth_blocks
    assert (block.name, block.width, block.count) == (LISTS[name], "n_layers", 2)
    assert paramcalc.load_spec(spec.to_yaml()).depth_blocks == spec.depth_blocks
    d = paramcalc.derive(spec, "mup", "adam")
    # CompleteP by default: (L / L_base)^-1
    assert d.evaluate_constants({"n_layers": 8})[f"{LISTS[name]}.residual"] == pytest.approx(2 / 8)


def test_gpt2_depth_factors_tensor_by_tensor():
    """depth-muP (alpha 1/2) with Adam at L = 8 = 4 L_base: inside blocks lr x (L/L_base)^(alpha-1) = 1/2 and
    eps x (L/L_base)^-alpha = 1/2 on top of the width rule; embeddings, ln_f and the readout none."""
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam", depth_alpha=0.5)
    deep8 = d.at_depth({"n_layers": 8}).evaluate({"n_layers": 8})
    base = d.evaluate()
    for name in ("attn.c_attn.weight", "mlp.c_fc.weight", "mlp.c_proj.bias", "ln_1.weight"):
        inside = deep8[f"transformer.h.7.{name}"]
        assert inside["lr"] == pytest.approx(0.5 * base[f"transformer.h.0.{name}"]["lr"], rel=1e-12), name
        assert inside["eps"] == pytest.approx(0.5 * base[f"transformer.h.0.{name}"]["eps"], rel=1e-12), name
    for name in ("transformer.wte.weight", "transformer.ln_f.weight"):
        assert deep8[name]["lr"] == pytest.approx(base[name]["lr"], rel=1e-12), name


def test_apply_scales_each_gpt2_branch():
    """Each block computes x + r attn(ln_1 x), then + r mlp(ln_2 .), with r = (8/2)^-1, by hand here."""
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam")
    model = apply(hf_models.gpt2(at("gpt2", 8)), d, at("gpt2", 8), generator=torch.Generator().manual_seed(0))
    block = model.transformer.h[5]
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        found = block(x)
        found = found[0] if isinstance(found, tuple) else found
        for branch in (block.attn, block.mlp):
            branch._paramcalc_residual = 1.0  # the branches unscaled, to add by hand
        x1 = x + 0.25 * block.attn(block.ln_1(x))[0]
        expected = x1 + 0.25 * block.mlp(block.ln_2(x1))
    assert torch.allclose(found, expected, atol=1e-6)


@pytest.mark.parametrize("name", list(LISTS))
def test_a_zero_branch_scale_makes_every_block_the_identity(name):
    """With r = 0 every block passes the stream through unchanged: every branch carries the hook."""
    model = getattr(hf_models, name)(at(name, 4)).eval()
    assert install_branch_scales(model, LISTS[name], 0.0)
    if name == "vit":
        inputs = {"pixel_values": torch.randn(1, 3, 16, 16)}
    else:
        inputs = {"input_ids": torch.randint(100, (1, 6))}
    seen = []

    def record(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        seen.append(torch.equal(output[0] if isinstance(output, tuple) else output, x))

    for block in model.get_submodule(LISTS[name]):
        block.register_forward_hook(record, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    assert seen == [True] * 4


def test_reapplying_replaces_the_scale_and_the_model_still_pickles():
    model = hf_models.gpt2(at("gpt2", 8))
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam")
    apply(model, d, at("gpt2", 8))
    apply(model, d, at("gpt2", 8))
    attn = model.transformer.h[0].attn
    assert len(attn._forward_hooks) == 1 and attn._paramcalc_residual == 0.25
    assert pickle.loads(pickle.dumps(attn))._paramcalc_residual == 0.25


def test_audit_catches_a_forgotten_branch_multiplier():
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam")
    widths = at("gpt2", 8)
    model = apply(hf_models.gpt2(widths), d, widths)
    optimizer = torch.optim.AdamW(param_groups(model, d, lr=1e-3, widths=widths))
    assert paramcalc.audit(model, optimizer, d, widths).ok
    install_branch_scales(model, "transformer.h", 1.0)  # as if never applied
    report = paramcalc.audit(model, optimizer, d, widths)
    [row] = [r for r in report.checks if r.quantity == "residual"]
    assert not report.ok and row.expected == pytest.approx(0.25) and row.found == 1.0


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return x + self.fc(x)


class ResidualMLP(nn.Module):
    """A user's own residual MLP: paramcalc cannot see where its blocks add to the stream."""

    def __init__(self, w: dict[str, int]) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(8, w["d"]), nn.Linear(w["d"], 2)
        self.blocks = nn.ModuleList(Block(w["d"]) for _ in range(w["L"]))

    def forward(self, x):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


def test_blocks_paramcalc_does_not_know_are_the_users_to_scale():
    factory = ResidualMLP
    spec = paramcalc.infer_spec(factory, {"d": {"base": 16}, "L": {"base": 2}})
    assert [b.name for b in spec.depth_blocks] == ["blocks"]
    d = paramcalc.derive(spec, "mup", "adam")
    with pytest.raises(paramcalc.UsageError, match=r"x = x \+ scale \* branch\(x\)"):
        apply(factory({"d": 16, "L": 4}), d, {"d": 16, "L": 4})


def test_a_width_that_adds_tensors_otherwise_is_refused():
    def factory(w):
        return nn.Sequential(*[nn.Linear(8, 8) for _ in range(w["n"])])  # blocks, but no ModuleList

    with pytest.raises(FactoryError, match=r"widths\.n.*changes which tensors the model has"):
        paramcalc.infer_spec(factory, {"n": {"base": 2}})


def test_infer_on_the_command_line_writes_the_repeat():
    from typer.testing import CliRunner

    from paramcalc.cli import app

    result = CliRunner().invoke(app, ["infer", "examples.hf_models:gpt2", "--widths",
                                      "d_model=64,n_heads=2,vocab=100,ctx=16,n_layers=2",
                                      "--scale", "d_model,n_heads,n_layers"])
    assert result.exit_code == 0, result.output
    assert "n_layers: {base: 2}" in result.stdout
    assert "- name: transformer.h\n  repeat: n_layers\n" in result.stdout
