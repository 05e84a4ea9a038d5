"""The optimizers' factors, typed in from their sources, and the emitted optimizers run on real models.

Sources of the expected factors (``m = d / 256``, the width multiplier):

- mup's ``MuAdam``/``MuAdamW`` (microsoft/mup, ``mup/optim.py``): matrix-like tensors (both
  dimensions scale: hidden weights) get ``lr / m`` and ``weight_decay * m``; vector-like ones
  (input weights, biases, gains, the ``MuReadout`` weight) keep both. The readout's forward
  multiplier ``1/m`` (``MuReadout``) is muP's ``table8`` form; the default ``table3`` form moves it
  into init and lr (abc-symmetry), and with it the decay.
- CompleteP (Dey et al. 2025, Table 1; EleutherAI nanoGPT-mup ``completep`` branch,
  ``configure_optimizers``) at fixed depth: hidden weights ``lr / m`` and ``weight_decay * m``,
  embeddings ``lr`` and ``weight_decay`` unchanged, norm gains and biases ``lr`` and no decay,
  Adam's epsilon ``eps / m``. Its muP branch keeps ``weight_decay`` on hidden weights (coupled).
- Everett et al. 2024 (Sec. 4): Adam's epsilon must shrink like the gradient entries, ``1/n``
  wherever the tensor's output width scales; a readout onto fixed classes keeps it.
- torch's ``torch.optim._muon._adjust_lr``: ``original`` multiplies lr by ``sqrt(max(1, A / B))``,
  ``match_rms_adamw`` by ``0.2 * sqrt(max(A, B))``, for the stored ``(A, B) = param.shape[:2]``.
- TP5 Table 3 (SGD, muP): input weights and biases ``lr * fan_out``, hidden ``lr``, output
  ``lr / fan_in`` (normalised at the base widths: ``m``, ``1``, ``1/m``).
"""

from __future__ import annotations

import math

import pytest
import sympy

import paramcalc

D = sympy.Symbol("d", positive=True)
M = D / 256

# A 4x MLP: input (fixed 64 -> d), up (d -> 4d), down (4d -> d), readout (d -> 10 fixed).
MLP4 = {
    "name": "mlp4",
    "widths": {"d": {"base": 256}, "n_in": 64, "n_out": 10},
    "layers": [
        {"name": "fc1", "fan_in": "n_in", "fan_out": "d", "bias": True},
        {"name": "up", "fan_in": "d", "fan_out": "4*d"},
        {"name": "down", "fan_in": "4*d", "fan_out": "d", "bias": True},
        {"name": "head", "fan_in": "d", "fan_out": "n_out"},
    ],
}

# (parametrization, optimizer, derive options, tensor, expected {quantity: expression in m})
CASES = [
    # mup MuAdamW, table3 form (independent decay: lr * weight_decay fixed)
    ("mup", "adamw", {}, "fc1.weight", {"lr": 1, "weight_decay": 1, "eps": 1 / M, "optimizer": "adamw"}),
    ("mup", "adamw", {}, "fc1.bias", {"lr": 1, "weight_decay": 0, "eps": 1 / M}),
    ("mup", "adamw", {}, "up.weight", {"lr": 1 / M, "weight_decay": M, "eps": 1 / M}),
    ("mup", "adamw", {}, "down.weight", {"lr": 1 / M, "weight_decay": M, "eps": 1 / M}),
    ("mup", "adamw", {}, "down.bias", {"lr": 1, "weight_decay": 0, "eps": 1 / M}),
    ("mup", "adamw", {}, "head.weight", {"lr": 1 / M, "weight_decay": M, "eps": 1, "multiplier": 1}),
    # MuReadout's own form: multiplier 1/m, lr and weight decay untouched (vector-like); its stored
    # gradient carries the 1/m, so epsilon does too
    ("mup", "adamw", {"form": "table8"}, "head.weight", {"lr": 1, "weight_decay": 1, "eps": 1 / M,
                                                          "multiplier": 1 / M}),
    # torch's plain AdamW (nanoGPT-mup's muP branch): coupled decay shrinks with lr
    ("mup", "adamw", {"weight_decay": "coupled"}, "up.weight", {"lr": 1 / M, "weight_decay": 1}),
    ("mup", "adamw", {"weight_decay": "coupled"}, "fc1.bias", {"weight_decay": 0}),
    ("mup", "adamw", {"decay": ("weight", "bias")}, "fc1.bias", {"weight_decay": 1}),
    # Adam: the same lr and eps factors; Lion: Adam's lr law, no epsilon
    ("mup", "adam", {}, "up.weight", {"lr": 1 / M, "eps": 1 / M, "optimizer": "adam"}),
    ("mup", "lion", {}, "up.weight", {"lr": 1 / M, "weight_decay": M, "eps": 1, "optimizer": "lion"}),
    ("mup", "lion", {}, "fc1.weight", {"lr": 1, "eps": 1}),
    # TP5 Table 3, SGD
    ("mup", "sgd", {}, "fc1.weight", {"lr": M, "weight_decay": 1 / M, "eps": 1}),
    ("mup", "sgd", {}, "up.weight", {"lr": 1, "weight_decay": 1}),
    ("mup", "sgd", {}, "head.weight", {"lr": 1 / M, "weight_decay": M}),
    # Muon for the hidden matrices (torch _adjust_lr), AdamW for the rest
    ("mup", "muon", {}, "up.weight", {"lr": 1, "weight_decay": 1, "eps": 1, "optimizer": "muon"}),
    ("mup", "muon", {}, "down.weight", {"lr": 1, "optimizer": "muon"}),
    ("mup", "muon", {}, "fc1.weight", {"lr": 1, "eps": 1 / M, "optimizer": "adamw"}),
    ("mup", "muon", {}, "head.weight", {"lr": 1 / M, "weight_decay": M, "optimizer": "adamw"}),
    ("mup", "muon", {"muon_adjust": "match_rms_adamw"}, "up.weight", {"lr": M ** sympy.Rational(-1, 2),
                                                                     "weight_decay": sympy.sqrt(M)}),
    # spectral, absolute: target sqrt(fan_out / fan_in) over Muon's shape factor
    ("spectral", "muon", {}, "up.weight", {"lr": 1}),  # 2 / sqrt(max(1, 4d / d)) = 2 / 2
    ("spectral", "muon", {}, "down.weight", {"lr": sympy.Rational(1, 2)}),  # (1/2) / sqrt(max(1, 1/4))
    ("spectral", "muon", {"muon_adjust": "match_rms_adamw"}, "up.weight", {"lr": 10 / sympy.sqrt(4 * D)}),
    ("spectral", "muon", {"muon_adjust": "match_rms_adamw"}, "down.weight", {"lr": sympy.Rational(5, 2)
                                                                             / sympy.sqrt(4 * D)}),
    ("spectral", "adamw", {}, "up.weight", {"lr": 1 / D, "eps": 1 / M}),  # 2 / sqrt(4d * d)
    # SP and NTP as people run them: epsilon fixed
    ("sp", "adamw", {}, "up.weight", {"lr": 1, "eps": 1, "weight_decay": 1}),
    ("ntp", "adamw", {}, "up.weight", {"eps": 1}),
]


@pytest.mark.parametrize(("param", "opt", "options", "tensor", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2].values())) or 'default'}-{c[3]}"
                              for c in CASES])
def test_factors_match_their_sources(param, opt, options, tensor, expected):
    d = paramcalc.derive(MLP4, param, opt, **options)
    p = d[tensor]
    for quantity, want in expected.items():
        got = getattr(p, quantity)
        if quantity == "optimizer":
            assert got == want
        else:
            assert sympy.simplify(got - sympy.sympify(want)) == 0, f"{quantity}: {got} != {want}"


def test_completep_table_on_gpt():
    """CompleteP at fixed depth (nanoGPT-mup completep): embeddings decayed with lr and weight decay
    unchanged, hidden lr / m and weight_decay * m, gains no decay, epsilon / m."""
    d = paramcalc.derive("examples/gpt.yaml", "mup", "adamw", decay=("weight", "embedding"))
    m = sympy.Symbol("d_model", positive=True) / 768
    for name, want in [("wte.weight", {"lr": 1, "weight_decay": 1, "eps": 1 / m}),
                       ("blocks.0.mlp.fc.weight", {"lr": 1 / m, "weight_decay": m, "eps": 1 / m}),
                       ("blocks.0.ln_1.weight", {"lr": 1, "weight_decay": 0, "eps": 1 / m})]:
        for quantity, value in want.items():
            assert sympy.simplify(getattr(d[name], quantity) - value) == 0, (name, quantity)


def test_muon_up_and_down_projections_differ_by_the_shape_factor():
    """In absolute (spectral) terms a 4x MLP's up-projection takes twice the down-projection's lr
    under ``original`` and four times under ``match_rms_adamw``."""
    for adjust, ratio in (("original", 2), ("match_rms_adamw", 4)):
        d = paramcalc.derive(MLP4, "spectral", "muon", muon_adjust=adjust)
        assert sympy.simplify(d["up.weight"].lr / d["down.weight"].lr) == ratio


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="muon_adjust must be one of"):
        paramcalc.derive(MLP4, "mup", "muon", muon_adjust="rms")
    with pytest.raises(ValueError, match="muon_adjust is an option of the muon optimizer"):
        paramcalc.derive(MLP4, "mup", "adamw", muon_adjust="original")
    with pytest.raises(ValueError, match="weight_decay must be one of"):
        paramcalc.derive(MLP4, "mup", "adamw", weight_decay="fan")
    with pytest.raises(ValueError, match="decay names tensor kinds"):
        paramcalc.derive(MLP4, "mup", "adamw", decay=("weights",))


def test_abc_shift_keeps_lr_times_decay_and_scales_eps():
    """An abc-shift by t moves lr by t**-p; weight decay moves by t**p (lr * wd fixed) and Adam's
    epsilon by t with the stored gradient."""
    d = paramcalc.derive(MLP4, "mup", "adamw")
    t = sympy.Integer(3)
    shifted = d.shift({"up.weight": t})
    assert sympy.simplify(shifted["up.weight"].lr * shifted["up.weight"].weight_decay
                          - d["up.weight"].lr * d["up.weight"].weight_decay) == 0
    assert sympy.simplify(shifted["up.weight"].eps / d["up.weight"].eps) == t


# The emitted optimizers on a real model ---------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.test_hf_models import at_times, built, spec_of  # noqa: E402

RUNS = [("adam", None), ("adamw", None), ("lion", None), ("sgd", None), ("muon", "original"),
        ("muon", "match_rms_adamw")]


@pytest.mark.parametrize(("opt", "adjust"), RUNS)
def test_emitted_optimizers_train_gpt2(opt, adjust):
    """HF GPT-2 at 2x base under muP: every group's lr, eps and weight decay is the derivation's,
    Muon holds exactly the hidden matrices (HF's transposed Conv1D included) with the derived
    adjust_lr_fn, and three steps train. (2x, not 4x: torch's Muon orthogonalizes in bfloat16,
    slow on a CPU.)"""
    d = paramcalc.derive(spec_of("gpt2"), "mup", opt, muon_adjust=adjust)
    widths = at_times(d, times=2)
    model = built("gpt2", d, widths)
    lr, adam_lr, wd, eps = 2e-3, 3e-4, 0.1, 1e-8
    opts = paramcalc.torch.make_optimizers(model, d, lr, adam_lr, widths, weight_decay=wd, eps=eps)
    values = d.evaluate(widths)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for o in opts:
        assert type(o).__name__ == {"adam": "Adam", "adamw": "AdamW", "lion": "Lion", "sgd": "SGD",
                                    "muon": "Muon"}[o.param_groups[0]["optimizer"]]
        for g in o.param_groups:
            for p in g["params"]:
                n = names[id(p)]
                seen.add(n)
                v = values[n]
                assert d[n].optimizer == g["optimizer"]
                base_lr = adam_lr if opt == "muon" and g["optimizer"] == "adamw" else lr
                assert g["lr"] == pytest.approx(base_lr * v["lr"], rel=1e-12), n
                assert g["weight_decay"] == pytest.approx(wd * v["weight_decay"], rel=1e-12), n
                if g["optimizer"] in ("adam", "adamw"):
                    assert g["eps"] == pytest.approx(eps * v["eps"], rel=1e-12), n
                if g["optimizer"] == "muon":
                    assert g["adjust_lr_fn"] == adjust
    assert seen == set(d)
    if opt == "muon":
        muon = {names[id(p)] for g in opts.get("muon").param_groups for p in g["params"]}
        hidden = {n for n in d if d[n].role == "hidden" and d[n].tensor.kind == "weight"}
        assert hidden
        assert muon == hidden
        assert all(p.dim() == 2 for g in opts.get("muon").param_groups for p in g["params"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, widths["vocab"], (2, 8), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(3):
        out = model(ids, labels=ids)
        losses.append(out.loss.item())
        out.loss.backward()
        opts.step()
        opts.zero_grad()
    assert all(math.isfinite(x) for x in losses)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert set(moved) == set(d), set(d) - set(moved)


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_muon_step_on_gpt2_conv1d_meets_the_spectral_target(adjust):
    """HF GPT-2's MLP weights are transposed (``Conv1D``, ``(fan_in, fan_out)``), which torch's Muon
    reads by ``shape[:2]``: the derived factor accounts for it, so one step moves ``c_fc`` by
    ``lr sqrt(4)`` and ``c_proj`` by ``lr sqrt(1/4)`` in spectral norm under spectral (Condition 1)."""
    d = paramcalc.derive(spec_of("gpt2"), "spectral", "muon", muon_adjust=adjust)
    widths = at_times(d)
    model = built("gpt2", d, widths)
    lr = 1e-3
    opts = paramcalc.torch.make_optimizers(model, d, lr, lr, widths)
    params = dict(model.named_parameters())
    names = {"transformer.h.0.mlp.c_fc.weight": 2.0, "transformer.h.0.mlp.c_proj.weight": 0.5}
    before = {n: params[n].detach().clone() for n in names}
    ids = torch.randint(0, widths["vocab"], (2, 8), generator=torch.Generator().manual_seed(0))
    model(ids, labels=ids).loss.backward()
    opts.step()
    for n, target in names.items():
        step = (params[n].detach() - before[n]).double()
        assert torch.linalg.matrix_norm(step, 2).item() == pytest.approx(lr * target, rel=0.35), n


def test_lion_steps_by_sign():
    from paramcalc.optim import Lion

    p = torch.nn.Parameter(torch.ones(3))
    opt = Lion([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([2.0, -1e-6, 0.0])
    opt.step()
    # p * (1 - lr * wd) - lr * sign(c), c = (1 - b1) * g on the first step
    assert torch.allclose(p.detach(), torch.tensor([0.95 - 0.1, 0.95 + 0.1, 0.95]))
    with pytest.raises(ValueError, match="Lion needs"):
        Lion([p], lr=-1.0)
