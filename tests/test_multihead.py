"""torch's nn.MultiheadAttention as a packed attention: inferred, derived, applied and measured.

Its q, k and v live in the module's own ``in_proj_weight`` and its logits are divided by
``sqrt(head_dim)`` with no scale to set, so the emitted ``apply_multipliers`` gives it a forward of
its own. These tests compute the attention by hand from the stored tensors, the derived multipliers
and the derived logit scale, and compare with what the model computes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import paramcalc
import paramcalc.torch as pt
from paramcalc.errors import SpecError, UsageError
from paramcalc.models import build_model
from tests.model_factories import WithMultiheadAttention, multihead

BASE = {"d": {"base": 32}}


@pytest.fixture(scope="module")
def spec():
    return paramcalc.infer_spec(multihead, BASE)


def by_hand(model: WithMultiheadAttention, idx: torch.Tensor, d, widths) -> torch.Tensor:
    """The model's output computed from its tensors with the derivation's multipliers and scale."""
    values = d.evaluate(widths)
    m = {name: v["multiplier"] for name, v in values.items()}
    scale = d.evaluate_constants(widths)["att.scale"]
    att = model.att
    e, heads = att.embed_dim, att.num_heads
    h = model.emb(idx) * m["emb.weight"]
    qkv = F.linear(h, m["att.in_proj_weight"] * att.in_proj_weight, m["att.in_proj_bias"] * att.in_proj_bias)
    b, t = idx.shape
    q, k, v = (x.view(b, t, heads, e // heads).transpose(1, 2) for x in qkv.split(e, dim=-1))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale).transpose(1, 2).reshape(b, t, e)
    o = att.out_proj
    y = F.linear(y, m["att.out_proj.weight"] * o.weight, m["att.out_proj.bias"] * o.bias)
    return F.linear(h + y, m["out.weight"] * model.out.weight, m["out.bias"] * model.out.bias)


def test_inferred_as_packed_attention(spec):
    entry = next(layer for layer in spec.layers if layer.kind == "attention")
    assert entry.name == "att" and entry.attrs["packed"] and entry.attrs["fused"]
    assert entry.attrs["projections"] == {"qkv": "att.in_proj", "o": "att.out_proj"}
    assert {t.name for t in spec.tensors} >= {"att.in_proj_weight", "att.in_proj_bias", "att.out_proj.weight"}
    text = spec.to_yaml()
    assert "packed: true" in text and paramcalc.load_spec(text).tensors == spec.tensors


#: An abc-shifted form (TP5 Lemma J.1) that puts a forward multiplier on every projection tensor.
SHIFT = {"att.in_proj_weight": 0.5, "att.in_proj_bias": 2, "att.out_proj.weight": 3,
         "att.out_proj.bias": 0.25}


@pytest.mark.parametrize(("param", "optimizer", "shift"), [
    ("mup", "adam", False), ("mup", "sgd", True), ("spectral", "adam", False), ("sp", "adam", False),
])
def test_apply_sets_scale_and_multipliers(spec, param, optimizer, shift):
    d = paramcalc.derive(spec, param, optimizer)
    if shift:
        d = d.shift(SHIFT)
    widths = {"d": 128}
    model = pt.apply(multihead(widths), d, widths, generator=torch.Generator().manual_seed(0))
    values = d.evaluate(widths)
    assert model.att.in_proj_weight.std().item() == pytest.approx(values["att.in_proj_weight"]["init_std"],
                                                                   rel=0.02)
    assert values["att.out_proj.bias"]["multiplier"] == (0.25 if shift else 1)
    scale = d.evaluate_constants(widths)["att.scale"]
    assert (scale == pytest.approx(1 / math.sqrt(32))) == (param == "sp")  # torch's own only under SP
    with torch.no_grad():  # biases are zero at init: give them values so that their multipliers count
        for p in (model.att.in_proj_bias, model.att.out_proj.bias, model.out.bias):
            p.normal_(0, 0.5)
    idx = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model(idx), by_hand(model, idx, d, widths), rtol=1e-4, atol=1e-5)
    # The stored tensors are the parameters, untouched by the forward.
    assert isinstance(model.att.in_proj_weight, torch.nn.Parameter)
    assert "in_proj_weight" not in model.att.__dict__


def test_param_groups_refuse_torch_forward(spec):
    d = paramcalc.derive(spec, "mup", "adam")
    widths = {"d": 64}
    model = multihead(widths)
    with pytest.raises(UsageError, match="att"):
        pt.param_groups(model, d, 1e-3, widths)
    model.att.scale = 0.1  # an attribute alone does not change torch's logits
    with pytest.raises(UsageError, match="apply_multipliers"):
        pt.param_groups(model, d, 1e-3, widths)
    with pytest.raises(UsageError, match="no submodule 'att'"):  # a model of another spec
        pt.param_groups(torch.nn.Sequential(), d, 1e-3, widths)
    pt.apply(model, d, widths)
    groups = pt.param_groups(model, d, 1e-3, widths)
    lrs = {n: g["lr"] for g in groups for n in g["names"]}
    assert lrs["att.in_proj_weight"] == pytest.approx(1e-3 * 32 / 64)


def test_trains_and_audits(spec):
    d = paramcalc.derive(spec, "mup", "adam")
    widths = {"d": 128}
    plain = multihead(widths)
    report = paramcalc.audit(plain, torch.optim.AdamW(plain.parameters(), lr=1e-3), d, widths)
    failing = {(c.tensor, c.quantity) for c in report.failures}
    assert ("att", "attention_scale") in failing and ("att.in_proj_weight", "lr") in failing
    model = pt.apply(multihead(widths), d, widths)
    opt = torch.optim.AdamW(pt.param_groups(model, d, 1e-2, widths))
    assert paramcalc.audit(model, opt, d, widths, lr=1e-2).ok
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 50, (8, 6), generator=g)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


PACKED = """
name: packed
widths: {{vocab: 40, d_model: {{base: 32}}, n_heads: 4}}
layers:
  - {{name: wte, kind: embedding, vocab: vocab, dim: d_model}}
  - {{name: ln, kind: layernorm, dim: d_model}}
  - {{name: attn, kind: attention, d_model: d_model, n_heads: n_heads, d_head: d_model/n_heads, {extra}}}
  - {{name: head, fan_in: d_model, fan_out: vocab}}
"""


def test_built_packed_equals_fused():
    """A spec's packed attention builds as nn.MultiheadAttention and computes what the fused one
    computes from the same tensors under the same derivation."""
    packed = paramcalc.load_spec(PACKED.format(extra="packed: true, bias: true"))
    fused = paramcalc.load_spec(PACKED.format(
        extra="fused: true, bias: true, names: {qkv: in_proj, o: out_proj}"))
    widths = {"d_model": 64}
    models = []
    for spec in (packed, fused):
        d = paramcalc.derive(spec, "mup", "adam")
        model = pt.apply(build_model(spec, widths), d, widths, generator=torch.Generator().manual_seed(0))
        models.append(model)
    a, b = models
    assert isinstance(a.attn, torch.nn.MultiheadAttention)
    with torch.no_grad():
        b.attn.in_proj.weight.copy_(a.attn.in_proj_weight)
        b.attn.in_proj.bias.normal_()
        a.attn.in_proj_bias.copy_(b.attn.in_proj.bias)
        for name, p in a.named_parameters():
            if "in_proj" not in name:
                b.get_parameter(name).copy_(p)
    idx = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a(idx), b(idx), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("extra", "field"), [
    ("packed: true, n_kv_heads: 2", "n_kv_heads"),
    ("packed: true, names: {qkv: c_attn, o: c_proj}", "names"),
    ("packed: true", "d_head"),
])
def test_packed_that_torch_cannot_be(extra, field):
    text = PACKED.format(extra=extra)
    if field == "d_head":  # heads that do not fill d_model
        text = text.replace("d_head: d_model/n_heads", "d_head: 4")
    with pytest.raises(SpecError, match=field):
        paramcalc.load_spec(text)


def test_verify_model_passes_mup_fails_sp():
    """``paramcalc verify --model`` on the factory: its in_proj and out_proj features are measured
    through the module (torch's forward calls neither), muP passes and SP fails on them."""
    from typer.testing import CliRunner

    from paramcalc.cli import app

    args = ["verify", "--model", "tests.model_factories:multihead", "--base", "d=32", "--scale", "d",
            "--optimizer", "adam", "--widths", "64,128,256,512"]
    mup = CliRunner().invoke(app, [*args, "--param", "mup"])
    assert mup.exit_code == 0, mup.output
    sp = CliRunner().invoke(app, [*args, "--param", "sp"])
    assert sp.exit_code == 1, sp.output
    assert "att.in_proj" in sp.output
