"""paramcalc's muP against the real peer, Microsoft's ``mup`` package (1.0.0).

The same MLP and the same small GPT are built twice: once with ``mup``'s own machinery
(``MuReadout`` / ``MuSharedReadout``, ``make_base_shapes`` + ``set_base_shapes``, ``mup.init``,
``MuSGD`` / ``MuAdam``), once as paramcalc's spec with ``derive(spec, "mup", optimizer)``. At width
multipliers 1, 2 and 4 relative to the base they are compared parameter by parameter:

- init std, measured from the tensors ``mup`` initialised (pooled over several seeds, with a
  tolerance of four standard errors of the estimate);
- learning-rate factor, read from the param groups ``MuSGD`` / ``MuAdam`` build (global lr 1);
- forward multiplier: ``MuReadout`` computes ``W (output_mult * x / width_mult)``, a multiplier
  ``output_mult / width_mult`` on its weight and none on its bias.

paramcalc's ``table8`` form must match these numbers as they are; its default ``table3`` form must
match them after folding the multiplier in with the abc-symmetry (TP5 Lemma J.1: effective init
``std * mult``, effective lr ``lr * mult**2`` for SGD and ``lr * mult`` for Adam). One training
step of each optimizer is also run both ways, in float64, and must give the same network.

Where the two differ on purpose, a test asserts the difference itself (so it fails if the
difference disappears) and its docstring says why; ``docs/mup.md`` summarises them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
mup = pytest.importorskip("mup")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import paramcalc  # noqa: E402
from paramcalc.models import build_model, set_attention_scales  # noqa: E402
from tests.conftest import small_gpt  # noqa: E402

MULTIPLIERS = (1, 2, 4)
POWER = {"sgd": 2, "adam": 1}  # abc-symmetry exponent of the learning rate
MUP_OPTIMIZERS = {"sgd": mup.MuSGD, "adam": mup.MuAdam}


# Measuring what mup does --------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """One parameter as ``mup`` set it up: init statistics, lr factor and forward multiplier."""

    std: float
    mean: float
    samples: int
    lr: float
    multiplier: float

    def effective(self, power: int) -> tuple[float, float]:
        """(init std, lr) with the multiplier folded in (abc-symmetry)."""
        return self.std * self.multiplier, self.lr * self.multiplier**power


def readout_multipliers(model: nn.Module) -> dict[str, float]:
    """``output_mult / width_mult`` of every ``MuReadout``, keyed by its layer name."""
    return {name: m.output_mult / m.width_mult() for name, m in model.named_modules()
            if isinstance(m, mup.MuReadout)}


def measure(build: Callable[[int], nn.Module], seeds: int) -> dict[str, dict[str, Measured]]:
    """For each optimizer, each parameter as ``mup`` sets it up: values pooled over ``seeds``
    builds, lrs read from ``MuSGD`` / ``MuAdam`` (global lr 1), ``MuReadout`` multipliers.

    The multipliers of readouts whose weight belongs to another layer (``MuSharedReadout``) are
    listed under ``"<readout>.use"``.
    """
    pooled: dict[str, list[torch.Tensor]] = {}
    model = build(0)
    for seed in range(seeds):
        m = model if seed == 0 else build(seed)
        for name, p in m.named_parameters():
            pooled.setdefault(name, []).append(p.detach().flatten().double())
    names = dict(model.named_parameters())
    mults = {f"{layer}.weight": mult for layer, mult in readout_multipliers(model).items()}
    out: dict[str, dict[str, Measured]] = {}
    for optimizer, make in MUP_OPTIMIZERS.items():
        opt = make(model.parameters(), lr=1.0)
        lr_of = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
        out[optimizer] = {}
        for name, p in names.items():
            values = torch.cat(pooled[name])
            out[optimizer][name] = Measured(values.std().item(), values.mean().item(),
                                            values.numel(), lr_of[id(p)], mults.get(name, 1.0))
        for name, mult in mults.items():
            if name not in names:  # a shared readout: its weight is listed under its owner
                out[optimizer][name.removesuffix(".weight") + ".use"] = Measured(
                    math.nan, math.nan, 0, math.nan, mult)
    return out


def assert_std(measured: float, samples: int, expected: float, what: str) -> None:
    """Equal within four standard errors of a std estimate (for Gaussian or uniform samples)."""
    tol = 4 * 0.71 / math.sqrt(samples) + 1e-3
    assert measured == pytest.approx(expected, rel=tol), f"{what}: mup {measured:.6g} vs {expected:.6g}"


def assert_number(got: float, expected: float, what: str) -> None:
    assert got == pytest.approx(expected, rel=1e-9), f"{what}: mup {got:.9g} vs paramcalc {expected:.9g}"


# The MLP ------------------------------------------------------------------------------------------
N_IN, D_BASE, N_OUT = 3072, 64, 10
# examples/mlp.yaml with biases everywhere. gain 1/sqrt(3) is torch's nn.Linear default init
# (kaiming_uniform_ with a = sqrt(5): std 1/sqrt(3 fan_in)), which mup keeps at the base width.
MLP_SPEC = {
    "name": "mlp-mup",
    "widths": {"n_in": N_IN, "d": {"base": D_BASE}, "n_out": N_OUT},
    "layers": [
        {"name": "fc1", "fan_in": "n_in", "fan_out": "d", "bias": True, "gain": "1/sqrt(3)"},
        {"name": "fc2", "fan_in": "d", "fan_out": "d", "bias": True, "gain": "1/sqrt(3)"},
        {"name": "head", "fan_in": "d", "fan_out": "n_out", "bias": True, "gain": "1/sqrt(3)"},
    ],
}
MLP_WEIGHTS = ("fc1.weight", "fc2.weight", "head.weight")
MLP_BIASES = ("fc1.bias", "fc2.bias", "head.bias")


class MupMLP(nn.Module):
    """The MLP as a mup user writes it: ``nn.Linear`` layers and a ``MuReadout`` head."""

    def __init__(self, d: int, **factory: object) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_IN, d, **factory)
        self.fc2 = nn.Linear(d, d, **factory)
        self.head = mup.MuReadout(d, N_OUT, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


with torch.device("meta"):
    MLP_BASE_SHAPES = mup.make_base_shapes(MupMLP(D_BASE), MupMLP(2 * D_BASE))


def mup_mlp(d: int, seed: int, dtype: torch.dtype = torch.float32) -> MupMLP:
    """mup's default route: torch's init, then ``set_base_shapes`` rescales readout and biases."""
    torch.manual_seed(seed)
    return mup.set_base_shapes(MupMLP(d, dtype=dtype), MLP_BASE_SHAPES)


@pytest.fixture(scope="module")
def mlp_measured() -> dict[tuple[str, int], dict[str, Measured]]:
    out = {}
    for m in MULTIPLIERS:
        for opt, measured in measure(lambda seed, m=m: mup_mlp(m * D_BASE, seed), seeds=64).items():
            out[opt, m] = measured
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_table8_matches_mup_parameter_by_parameter(mlp_measured, optimizer):
    """TP5 Table 8 is what ``mup`` implements: same raw init, lr and multiplier for every weight,
    same lr and (no) multiplier for every bias."""
    d = paramcalc.derive(MLP_SPEC, "mup", optimizer, form="table8")
    for m in MULTIPLIERS:
        values = d.evaluate({"d": m * D_BASE})
        got = mlp_measured[optimizer, m]
        assert set(got) == set(values)
        for name in MLP_WEIGHTS:
            what = f"{name} at m={m} ({optimizer})"
            assert_std(got[name].std, got[name].samples, values[name]["init_std"], what)
            assert_number(got[name].multiplier, values[name]["multiplier"], what + " multiplier")
        for name in MLP_WEIGHTS + MLP_BIASES:
            assert_number(got[name].lr, values[name]["lr"], f"{name} at m={m} ({optimizer}) lr")
            assert_number(got[name].multiplier, values[name]["multiplier"], f"{name} multiplier")
    # The readout is where the forms differ: table8 carries mup's 1/m multiplier.
    assert got["head.weight"].multiplier == pytest.approx(1 / 4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_table3_matches_mup_after_folding(mlp_measured, optimizer):
    """The default form has no multipliers; folding mup's ``MuReadout`` multiplier into its init
    and lr (SGD ``lr * mult**2``, Adam ``lr * mult``) gives paramcalc's numbers."""
    d = paramcalc.derive(MLP_SPEC, "mup", optimizer)
    assert d.form == "table3"
    p = POWER[optimizer]
    for m in MULTIPLIERS:
        values = d.evaluate({"d": m * D_BASE})
        got = mlp_measured[optimizer, m]
        for name in MLP_WEIGHTS + MLP_BIASES:
            assert values[name]["multiplier"] == 1
            std, lr = got[name].effective(p)
            assert_number(lr, values[name]["lr"], f"{name} at m={m} ({optimizer}) effective lr")
            if name in MLP_WEIGHTS:
                assert_std(std, got[name].samples, values[name]["init_std"], f"{name} at m={m}")
    # Folded readout: init ~ 1/m and lr ~ 1/m, both as TP5 Table 3 writes them.
    head = [mlp_measured[optimizer, m]["head.weight"].effective(p) for m in (1, 4)]
    assert head[1][0] / head[0][0] == pytest.approx(1 / 4, rel=0.1)
    assert head[1][1] / head[0][1] == pytest.approx(1 / 4)


def test_mlp_bias_init_differs_on_purpose(mlp_measured):
    """Biases: same scaling (Theta(1) init, same lr), different constant.

    ``mup`` keeps torch's default bias init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the
    *weight's* fan-in, and ``set_base_shapes`` multiplies it by ``sqrt(fan_in / fan_in_base)``
    (``rescale_linear_bias``; ``MuReadout._rescale_parameters`` for the readout's bias), which pins
    it at its base value ``1/sqrt(3 fan_in_base)`` at every width. paramcalc treats a bias as a
    weight on the constant input 1 (TP5 Tables 3 and 8: "input weights & all biases", fan_in 1),
    so its init is ``N(0, 1)`` with ``bias_init: normal`` and zero by default (App. D: "in
    practice one may usually just take sigma = 0"). Both are width-independent.
    """
    fan_in_base = {"fc1.bias": N_IN, "fc2.bias": D_BASE, "head.bias": D_BASE}
    for m in MULTIPLIERS:
        got = mlp_measured["sgd", m]
        for name, fan_in in fan_in_base.items():
            assert_std(got[name].std, got[name].samples, 1 / math.sqrt(3 * fan_in),
                       f"mup {name} at m={m}")
    default = paramcalc.derive(MLP_SPEC, "mup", "sgd")
    normal_spec = {**MLP_SPEC, "layers": [{**layer, "bias_init": "normal"}
                                          for layer in MLP_SPEC["layers"]]}
    normal = paramcalc.derive(normal_spec, "mup", "sgd")
    for name in fan_in_base:
        assert default[name].init_std == 0
        assert normal[name].init_std == 1
        assert normal[name].exponents["init_std"] == 0  # Theta(1), as mup's
        for m in MULTIPLIERS:  # mup's constant is not paramcalc's
            assert mlp_measured["sgd", m][name].std < 0.1 * normal[name].init_std


def _copy_mlp(source: MupMLP, target: nn.Module, head_multiplier: float) -> None:
    """Load mup's weights into paramcalc's model, folding the readout multiplier into the weight."""
    with torch.no_grad():
        for name, p in target.named_parameters():
            value = source.get_parameter(name)
            p.copy_(value * head_multiplier if name == "head.weight" else value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_one_step_matches_mup(optimizer):
    """One step of ``MuSGD``/``MuAdam`` on mup's MLP and of plain SGD/Adam with paramcalc's table3
    learning rates on the same (folded) network give the same network."""
    m, lr = 4, 0.05
    spec = paramcalc.load_spec(MLP_SPEC)
    values = paramcalc.derive(spec, "mup", optimizer).evaluate({"d": m * D_BASE})
    theirs = mup_mlp(m * D_BASE, seed=1, dtype=torch.float64)
    ours = build_model(spec, {"d": m * D_BASE}, dtype=torch.float64)
    mult = readout_multipliers(theirs)["head"]
    _copy_mlp(theirs, ours, mult)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(16, N_IN, generator=gen, dtype=torch.float64)
    y = torch.randint(0, N_OUT, (16,), generator=gen)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-12)
    groups = [{"params": [p], "lr": lr * values[name]["lr"]} for name, p in ours.named_parameters()]
    kwargs = {"eps": 1e-30} if optimizer == "adam" else {}
    torch_opt = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    pairs = [(theirs, MUP_OPTIMIZERS[optimizer](theirs.parameters(), lr=lr, **kwargs)),
             (ours, torch_opt(groups, **kwargs))]
    before = {name: p.detach().clone() for name, p in ours.named_parameters()}
    for model, opt in pairs:
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for name, p in ours.named_parameters():
        assert not torch.allclose(p, before[name]), f"{name} did not move"
        expected = theirs.get_parameter(name) * (mult if name == "head.weight" else 1)
        torch.testing.assert_close(p, expected, rtol=1e-9, atol=1e-12, msg=name)


# The GPT ------------------------------------------------------------------------------------------
VOCAB, CTX, D_MODEL_BASE, HEADS_BASE, D_HEAD, N_LAYERS = 64, 16, 32, 2, 16, 2
GPT_SPEC = small_gpt("gpt-mup", vocab=VOCAB, ctx=CTX, d_model_base=D_MODEL_BASE,
                     heads_base=HEADS_BASE, d_head=D_HEAD, n_layers=N_LAYERS)


def gpt_widths(m: int) -> dict[str, int]:
    return {"d_model": m * D_MODEL_BASE, "n_heads": m * HEADS_BASE}


class MupAttention(nn.Module):
    def __init__(self, d: int, heads: int, **factory: object) -> None:
        super().__init__()
        self.heads, self.scale = heads, 1 / math.sqrt(D_HEAD)
        for key in "qkvo":
            setattr(self, key, nn.Linear(d, d, **factory))  # heads * D_HEAD == d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, D_HEAD).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class MupBlock(nn.Module):
    def __init__(self, d: int, heads: int, **factory: object) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d, **factory), nn.LayerNorm(d, **factory)
        self.attn = MupAttention(d, heads, **factory)
        self.mlp = nn.ModuleDict({"fc": nn.Linear(d, 4 * d, **factory),
                                  "proj": nn.Linear(4 * d, d, **factory)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp["proj"](F.gelu(self.mlp["fc"](self.ln_2(x))))


class MupGPT(nn.Module):
    """The GPT as a mup user writes it: a ``MuSharedReadout`` tied to the token embedding."""

    def __init__(self, m: int, **factory: object) -> None:
        super().__init__()
        d, heads = m * D_MODEL_BASE, m * HEADS_BASE
        self.wte, self.wpe = nn.Embedding(VOCAB, d, **factory), nn.Embedding(CTX, d, **factory)
        self.blocks = nn.ModuleList(MupBlock(d, heads, **factory) for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(d, **factory)
        self.lm_head = mup.MuSharedReadout(self.wte.weight, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


with torch.device("meta"):
    GPT_BASE_SHAPES = mup.make_base_shapes(MupGPT(1), MupGPT(2))


def mup_gpt(m: int, seed: int, dtype: torch.dtype = torch.float32) -> MupGPT:
    """torch's init, ``set_base_shapes`` (which rescales the readout, hence the tied embedding, and
    the biases), then ``mup.init.normal_`` for hidden weights at their base-width std
    ``1/sqrt(fan_in_base)`` (mup scales it by ``1/sqrt(fan_in multiplier)``)."""
    torch.manual_seed(seed)
    model = mup.set_base_shapes(MupGPT(m, dtype=dtype), GPT_BASE_SHAPES)
    for block in model.blocks:
        for lin in [*(getattr(block.attn, k) for k in "qkvo"), block.mlp["fc"], block.mlp["proj"]]:
            fan_in = lin.weight.infshape[1]
            mup.init.normal_(lin.weight, std=1 / math.sqrt(fan_in.base_dim or fan_in.dim))
    return model


@pytest.fixture(scope="module")
def gpt_measured() -> dict[tuple[str, int], dict[str, Measured]]:
    out = {}
    for m in MULTIPLIERS:
        for opt, measured in measure(lambda seed, m=m: mup_gpt(m, seed), seeds=16).items():
            out[opt, m] = measured
    return out


def gpt_kind(name: str) -> str:
    """embedding | gain | bias | weight, for the comparison below."""
    if name in ("wte.weight", "wpe.weight"):
        return "embedding"
    if ".ln_" in name or name.startswith("ln_f"):
        return "gain" if name.endswith("weight") else "norm_bias"
    return "weight" if name.endswith("weight") else "bias"


@pytest.mark.parametrize("form", ["table3", "table8"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gpt_matches_mup(gpt_measured, optimizer, form):
    """Every GPT tensor: lr factors equal; hidden-weight init equal; norm gains at one and norm
    biases at zero in both; the tied readout's multiplier and effective lr equal mup's. (The
    embedding's init and the linear biases' init differ on purpose: see the tests below.) No
    tensor of this GPT carries a multiplier of its own, so both forms agree with mup as they are."""
    d = paramcalc.derive(GPT_SPEC, "mup", optimizer, form=form)
    p = POWER[optimizer]
    for m in MULTIPLIERS:
        widths = gpt_widths(m)
        values = d.evaluate(widths)
        got = gpt_measured[optimizer, m]
        assert set(got) == set(values) | {"lm_head.use"}
        for name, mine in values.items():
            what = f"{name} at m={m} ({optimizer}, {form})"
            theirs = got[name]
            assert_number(theirs.lr, mine["lr"], what + " lr")
            assert theirs.multiplier == mine["multiplier"] == 1, what
            kind = gpt_kind(name)
            if kind == "weight":
                assert_std(theirs.std, theirs.samples, mine["init_std"], what)
            elif kind in ("gain", "norm_bias"):
                assert theirs.std == mine["init_std"] == 0, what
                assert theirs.mean == float(d[name].init_mean) == (1 if kind == "gain" else 0), what
        # The tied readout: a use of wte.weight with its own forward multiplier.
        use = d.evaluate_tied(widths)["lm_head"]
        mult = got["lm_head.use"].multiplier
        assert_number(mult, use["multiplier"], f"lm_head multiplier at m={m}")
        assert_number(got["wte.weight"].lr * mult**p, use["lr"], f"lm_head effective lr at m={m}")


def test_gpt_tied_embedding_differs_on_purpose(gpt_measured):
    """The tied embedding: mup issue 55.

    ``MuSharedReadout`` inherits ``MuReadout._rescale_parameters``, which ``set_base_shapes``
    (``rescale_params=True``, the default) calls to turn a readout's SP init into Table 8's
    constant one: ``weight *= sqrt(width_mult)``. Shared with the embedding, that multiplies the
    *embedding* by ``sqrt(m)``: its init grows like ``sqrt(d_model)`` (TP5 asks Theta(1) for input
    weights), and the readout use gets ``sqrt(m) / m = 1/sqrt(m)`` instead of Table 3's ``1/m``.
    paramcalc keeps the embedding's own init (``N(0, 1)``, Theta(1)) and gives the readout use the
    forward multiplier ``1/m`` (:mod:`paramcalc.engine.ties`), so that use's effective init is
    ``1/m``: the Theta-exponent of an untied muP readout (``init_exponent_gap == 0``). Both give
    the readout use the same multiplier and effective lr (checked above); only the init differs.
    """
    d = paramcalc.derive(GPT_SPEC, "mup", "adam")
    use = d.tied["lm_head"]
    assert use.init_exponent_gap == 0
    for m in MULTIPLIERS:
        widths = gpt_widths(m)
        wte = gpt_measured["adam", m]["wte.weight"]
        assert_std(wte.std, wte.samples, math.sqrt(m), f"mup wte at m={m}")  # grows with width
        assert d.evaluate(widths)["wte.weight"]["init_std"] == 1  # paramcalc's does not
        tied = d.evaluate_tied(widths)["lm_head"]
        assert tied["init_std"] == pytest.approx(1 / m)
        assert_std(wte.std * tied["multiplier"], wte.samples, 1 / math.sqrt(m), f"mup lm_head at m={m}")
    assert d["wte.weight"].exponents["init_std"] == 0


def test_gpt_bias_init_differs_on_purpose(gpt_measured):
    """Linear biases in the blocks: ``mup`` keeps torch's ``U(+-1/sqrt(fan_in))`` rescaled to its
    base value ``1/sqrt(3 fan_in_base)`` (Theta(1)); paramcalc's attention and MLP blocks have zero
    biases (App. D). The learning rates agree (checked above)."""
    d = paramcalc.derive(GPT_SPEC, "mup", "sgd")
    for m in MULTIPLIERS:
        got = gpt_measured["sgd", m]
        for name in ("blocks.0.attn.q.bias", "blocks.1.attn.o.bias", "blocks.0.mlp.fc.bias",
                     "blocks.1.mlp.proj.bias"):
            fan_in_base = 4 * D_MODEL_BASE if ".proj." in name else D_MODEL_BASE
            assert_std(got[name].std, got[name].samples, 1 / math.sqrt(3 * fan_in_base), name)
            assert d[name].init_std == 0


def _copy_gpt(source: MupGPT, target: nn.Module) -> None:
    with torch.no_grad():
        for name, p in target.named_parameters():
            p.copy_(source.get_parameter(name))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gpt_one_step_matches_mup(optimizer):
    """Same network (mup's init copied in, paramcalc's tied multiplier and attention scale), one step
    of ``MuSGD``/``MuAdam`` vs plain SGD/Adam with paramcalc's table3 lrs: same network after."""
    m, lr = 4, 0.02
    spec = paramcalc.load_spec(GPT_SPEC)
    widths = gpt_widths(m)
    d = paramcalc.derive(spec, "mup", optimizer)
    values = d.evaluate(widths)
    theirs = mup_gpt(m, seed=3, dtype=torch.float64)
    ours = build_model(spec, widths, dtype=torch.float64)
    _copy_gpt(theirs, ours)
    mu = d.evaluate_tied(widths)["lm_head"]["multiplier"]
    ours.get_submodule("lm_head").register_forward_pre_hook(lambda _, args: (args[0] * mu,))
    set_attention_scales(ours, d.evaluate_constants(widths))
    for block in theirs.blocks:
        block.attn.scale = ours.get_submodule("blocks.0.attn").scale
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, VOCAB, (4, CTX), generator=gen)
    torch.testing.assert_close(ours(idx), theirs(idx), rtol=1e-10, atol=1e-12)
    groups = [{"params": [p], "lr": lr * values[name]["lr"]} for name, p in ours.named_parameters()]
    kwargs = {"eps": 1e-30} if optimizer == "adam" else {}
    torch_opt = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
    before = {name: p.detach().clone() for name, p in ours.named_parameters()}
    for model, opt in [(theirs, MUP_OPTIMIZERS[optimizer](theirs.parameters(), lr=lr, **kwargs)),
                       (ours, torch_opt(groups, **kwargs))]:
        logits = model(idx)
        F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), idx[:, 1:].reshape(-1)).backward()
        opt.step()
    for name, p in ours.named_parameters():
        # A key bias shifts every logit of a query row equally: softmax ignores it, no gradient.
        assert name.endswith("attn.k.bias") or not torch.allclose(p, before[name]), name
        torch.testing.assert_close(p, theirs.get_parameter(name), rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(ours(idx), theirs(idx), rtol=1e-9, atol=1e-10)


# Attention ----------------------------------------------------------------------------------------
def _attention_scale(d_head: int | dict, at: int) -> float:
    spec = {**GPT_SPEC, "widths": {**GPT_SPEC["widths"], "d_head": d_head}}
    d = paramcalc.derive(spec, "mup", "adam")
    return d.evaluate_constants({"d_head": at} if isinstance(d_head, dict) else None)["blocks.0.attn.scale"]


def test_attention_scale_against_mup_recipe():
    """The attention-logit scale is not in the ``mup`` package: its README and Transformer example
    ask the user for ``attn_mult / d_head`` in place of ``1/sqrt(d_head)`` (the README writes
    ``8/d`` for ``d_head = 64``). paramcalc's muP picks the constant that makes it SP at the
    base: ``sqrt(d_head_base) / d_head``. Same ``1/d_head`` scaling; equal to the README's ``8/d``
    when ``d_head_base = 64``; with a fixed ``d_head`` (GPT-2's 64) both are ``1/8`` at every
    width, as neither needs a change. With another base the constant differs from a fixed 8 on
    purpose (example: base 16 gives ``4/d``)."""
    for d_head in (64, 128, 256):
        assert _attention_scale({"base": 64}, d_head) == pytest.approx(8 / d_head)
        assert _attention_scale({"base": 16}, d_head) == pytest.approx(4 / d_head)
    assert _attention_scale({"base": 64}, 64) == pytest.approx(1 / math.sqrt(64))  # SP at base
    assert _attention_scale(64, 64) == pytest.approx(8 / 64)

