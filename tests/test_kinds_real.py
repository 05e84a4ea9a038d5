"""The kinds real models need: convolutions, raw parameters, ``layout: in_out`` and grouped-query
attention. Each is derived, emitted, and the emitted torch and JAX code is run on a model: the
measured std of every tensor, the lr of every group and the JAX shapes must be the derivation's.
"""

from __future__ import annotations

import pytest
import sympy

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import paramcalc  # noqa: E402
from paramcalc import SpecError, registry  # noqa: E402
from paramcalc.emit import emit  # noqa: E402
from paramcalc.models import build_model  # noqa: E402
from tests.test_emit_torch import load_module  # noqa: E402
from tests.test_models import small_gpt  # noqa: E402

CNN = {
    "name": "cnn",
    "widths": {"c": {"base": 16}, "n_out": 10},
    "layers": [
        {"kind": "conv", "name": "stem", "in_channels": 3, "out_channels": "c", "kernel_size": 3,
         "padding": 1, "bias": True},
        {"kind": "conv2d", "name": "conv", "in_channels": "c", "out_channels": "2*c",
         "kernel_size": [3, 1]},
        {"kind": "conv", "name": "depthwise", "in_channels": "2*c", "out_channels": "2*c",
         "kernel_size": 3, "groups": "2*c", "padding": 1},
        {"name": "head", "fan_in": "2*c", "fan_out": "n_out", "bias": True},
    ],
}
RAW = {
    "name": "raw",
    "widths": {"d": {"base": 16}, "n_out": 4},
    "layers": [
        {"kind": "parameter", "name": "embeddings.cls_token", "shape": [1, 1, "d"]},
        {"kind": "parameter", "name": "embeddings.position", "shape": [1, 5, "d"], "init": "zeros"},
        {"name": "proj", "fan_in": "d", "fan_out": "2*d", "layout": "in_out", "bias": True},
        {"name": "head", "fan_in": "2*d", "fan_out": "n_out"},
    ],
}


class RawModel(nn.Module):
    """A model with raw parameters and a transposed (HF ``Conv1D``-style) weight."""

    def __init__(self, d: int, n_out: int) -> None:
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.embeddings.position = nn.Parameter(torch.ones(1, 5, d))
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.zeros(d, 2 * d))
        self.proj.bias = nn.Parameter(torch.ones(2 * d))
        self.head = nn.Linear(2 * d, n_out, bias=False)


def _stds_and_lrs(module, model, widths):
    module.init_parameters(model, widths, generator=torch.Generator().manual_seed(0))
    module.apply_multipliers(model, widths)
    opt = torch.optim.SGD(module.param_groups(model, lr=1.0, widths=widths))
    lrs = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    return {n: float(p.detach().std()) if p.numel() > 1 else 0.0 for n, p in model.named_parameters()}, lrs


def _check(d, model, widths, rel=0.12):
    stds, lrs = _stds_and_lrs(load_module(emit(d, "torch")), model, widths)
    values = d.evaluate(widths)
    assert set(stds) == set(values)
    for name, v in values.items():
        assert lrs[name] == pytest.approx(v["lr"], rel=1e-12), name
        assert stds[name] == pytest.approx(v["init_std"], rel=rel, abs=1e-12), name


@pytest.mark.parametrize("param", registry.PARAMETRIZATIONS)
def test_conv_chain_emitted_torch_on_built_model(param):
    d = paramcalc.derive(CNN, param, "adam")
    widths = {"c": 32}
    model = build_model(d.spec, widths)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert tuple(model.get_parameter("depthwise.weight").shape) == (64, 1, 3, 3)
    _check(d, model, widths)


def test_conv_fan_in_is_patch_size_and_roles_follow():
    d = paramcalc.derive(CNN, "mup", "adam")
    c = sympy.Symbol("c", positive=True)
    t = {name: p.tensor for name, p in d.items()}
    assert t["stem.weight"].fan_in == 27 and t["stem.weight"].role == "input"
    assert sympy.simplify(t["conv.weight"].fan_in - 3 * c) == 0 and t["conv.weight"].role == "hidden"
    # Depthwise: one input channel per group, so d_in = 9 does not scale: an input-role tensor.
    assert t["depthwise.weight"].fan_in == 9 and t["depthwise.weight"].role == "input"
    assert t["conv.weight"].matrix_shape == (2 * c, 3 * c)
    # muP Adam: the lr of a hidden tensor is fan_in_base / fan_in.
    assert d["conv.weight"].lr.xreplace({c: 64}) == sympy.Rational(1, 4)


class Halved:
    """A toy rule: spectral, with every forward multiplier 1/2 (to see multipliers act)."""

    name = "halved"
    title = "Halved"
    forms = ("default",)

    def scales(self, shape, optimizer, form):
        from paramcalc.engine.rules import Scales
        from paramcalc.engine.rules.spectral import RULE

        s = RULE.scales(shape, optimizer, form)
        return Scales(s.init_std, s.lr, sympy.Rational(1, 2))

    def attention_scale(self, d_head, d_head_base):
        return 1 / d_head


@pytest.fixture
def halved():
    from paramcalc.engine.rules import register_rule, unregister_rule

    register_rule(Halved())
    yield "halved"
    unregister_rule("halved")


def test_conv_bias_multiplier_broadcasts_over_channels(halved):
    d = paramcalc.derive(CNN, halved, "adam")
    model = build_model(d.spec, {"c": 32})
    module = load_module(emit(d, "torch"))
    module.init_parameters(model, {"c": 32})
    with torch.no_grad():
        model.get_parameter("stem.bias").normal_()
    x = torch.randn(2, 3, 8, 8)
    stem = model.get_submodule("stem")
    expected = 0.5 * stem(x)  # both multipliers 1/2
    module.apply_multipliers(model, {"c": 32})
    assert torch.allclose(stem(x), expected, atol=1e-6)


def test_groups_must_divide_channels():
    bad = {**CNN, "layers": [dict(CNN["layers"][0], groups=2)]}
    with pytest.raises(SpecError, match=r"layers\[0\].groups: groups \(2\) must divide in_channels"):
        paramcalc.load_spec(bad)


def test_conv_jax_kernel_layout():
    jax = pytest.importorskip("jax")
    d = paramcalc.derive(CNN, "spectral", "adam")
    module = load_module(emit(d, "jax"))
    params = module.init_params(jax.random.PRNGKey(0), {"c": 32})
    assert params["conv"]["kernel"].shape == (3, 1, 32, 64)  # flax: (*kernel, in/groups, out)
    assert params["depthwise"]["kernel"].shape == (3, 3, 1, 64)
    values = d.evaluate({"c": 32})
    assert float(params["conv"]["kernel"].std()) == pytest.approx(values["conv.weight"]["init_std"], rel=0.1)


@pytest.mark.parametrize("param", registry.PARAMETRIZATIONS)
def test_raw_parameters_and_in_out_layout_on_a_hand_written_model(param):
    d = paramcalc.derive(RAW, param, "adam")
    assert d["embeddings.cls_token"].tensor.shape == (1, 1, sympy.Symbol("d", positive=True))
    assert d["embeddings.cls_token"].tensor.role == "input"
    widths = {"d": 64}
    model = RawModel(64, 4)
    _check(d, model, widths)
    assert float(model.embeddings.position.detach().abs().max()) == 0.0  # init: zeros


def test_raw_parameters_in_jax():
    jax = pytest.importorskip("jax")
    d = paramcalc.derive(RAW, "mup", "adam")
    params = load_module(emit(d, "jax")).init_params(jax.random.PRNGKey(0), {"d": 32})
    assert params["embeddings"]["cls_token"].shape == (1, 1, 32)
    assert params["proj"]["kernel"].shape == (32, 64)


def test_grouped_query_attention_shapes_and_model():
    spec = small_gpt(attn={"n_kv_heads": 1, "names": {"q": "q_proj", "k": "k_proj", "v": "v_proj",
                                                        "o": "o_proj"}})
    d = paramcalc.derive(spec, "mup", "adam")
    n_kv = d["blocks.0.attn.k_proj.weight"].tensor.shape
    sym = d.spec.symbols
    assert n_kv == (sym["d_head"], sym["d_model"])  # one key/value head
    widths = {"d_model": 64, "n_heads": 4}
    model = build_model(d.spec, widths)
    out = model(torch.randint(0, 50, (2, 6)))
    assert out.shape == (2, 6, 50)
    _check(d, model, widths, rel=0.25)


def test_fused_grouped_query_attention_width():
    spec = small_gpt(attn={"n_kv_heads": 1, "fused": True, "layout": "in_out"})
    d = paramcalc.derive(spec, "mup", "adam")
    shape = d["blocks.0.attn.qkv.weight"].tensor.shape
    sym = d.spec.symbols
    assert shape[0] == sym["d_model"]
    assert sympy.expand(shape[1] - (sym["n_heads"] + 2) * sym["d_head"]) == 0
    model = build_model(d.spec, {"d_model": 64, "n_heads": 4})
    assert model(torch.randint(0, 50, (2, 6))).shape == (2, 6, 50)


def test_a_multiplier_on_a_raw_parameter_is_refused_at_emission(halved):
    d = paramcalc.derive(RAW, halved, "sgd")
    with pytest.raises(SpecError, match="raw parameter has no module to apply it"):
        emit(d, "torch")
