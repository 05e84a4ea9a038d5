"""Hugging Face models built offline from their configs, the reference users of the factory route:
infer_spec -> derive -> apply -> param_groups, measured on the live models, and audit on them.

Nothing is written by hand for these models: their specs are inferred (``examples/hf_models.py``
holds only the factories and their widths).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import paramcalc  # noqa: E402
from examples import hf_models  # noqa: E402
from paramcalc.infer.inputs import example_input, output_tensor  # noqa: E402
from paramcalc.torch import apply, param_groups  # noqa: E402

MODELS = ("gpt2", "llama", "vit", "resnet")
_SPECS: dict[str, paramcalc.Spec] = {}


def spec_of(name: str) -> paramcalc.Spec:
    if name not in _SPECS:
        _SPECS[name] = paramcalc.infer_spec(getattr(hf_models, name), hf_models.WIDTHS[name], name=name)
    return _SPECS[name]


def at_times(d, times: int = 4) -> dict[str, int]:
    """Every width at ``times`` its base (4x by default): the lead scaling width given, the others in
    proportion."""
    lead = next(w for w in d.spec.widths.values() if w.scaling)
    return paramcalc.widths_at(d, **{lead.name: times * lead.value})


def built(name: str, d, widths):
    model = getattr(hf_models, name)(widths)
    return apply(model, d, widths, generator=torch.Generator().manual_seed(0))


def std_tolerance(numel: int) -> float:
    """Relative error allowed on a measured std: 5 sampling standard errors (the std of ``N``
    Gaussian draws has relative error about ``1/sqrt(2N)``), and at least 3%."""
    return max(0.03, 5 / math.sqrt(2 * numel))


@pytest.mark.parametrize("param", ["mup", "spectral"])
@pytest.mark.parametrize("name", MODELS)
def test_apply_sets_every_std_and_param_groups_every_lr(name, param):
    d = paramcalc.derive(spec_of(name), param, "adam")
    widths = at_times(d)
    model = built(name, d, widths)
    values = d.evaluate(widths)
    params = dict(model.named_parameters())
    assert set(params) == set(d), "every parameter of the model is a spec tensor"
    for tensor, p in params.items():
        want, data = values[tensor]["init_std"], p.detach().double()
        if want == 0:  # constant init: gains, biases
            assert float(data.std()) == 0 and float(data.mean()) == float(d[tensor].init_mean), tensor
        else:
            got = float(data.std())
            assert abs(got / want - 1) < std_tolerance(p.numel()), (tensor, got, want)

    lr = 1e-3
    groups = param_groups(model, d, lr, widths)
    grouped = [n for g in groups for n in g["names"]]
    assert sorted(grouped) == sorted(params) and len(grouped) == len(set(grouped))
    for g in groups:
        for tensor in g["names"]:
            assert g["lr"] == pytest.approx(lr * values[tensor]["lr"], rel=1e-12), tensor
    factors = {values[n]["lr"] for n in params}
    assert len(factors) > 1, "at 4x base the tensors' learning rates differ"

    opt = torch.optim.AdamW(groups, lr=lr)
    x = example_input(d.spec, widths, model, batch=2, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(3):
        out = output_tensor(model(x))
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]),
                                                 torch.zeros(out[..., 0].numel(), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] != losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_audit_fails_plain_adamw_and_passes_param_groups(name):
    d = paramcalc.derive(spec_of(name), "mup", "adam")
    widths = at_times(d)
    model = built(name, d, widths)

    plain = paramcalc.audit(model, torch.optim.AdamW(model.parameters(), lr=1e-3), d, widths, lr=1e-3)
    assert not plain.ok
    hidden = {n for n in d if d[n].role == "hidden" and d[n].tensor.kind == "weight"}
    lr_failures = {r.tensor for r in plain.failures if r.quantity == "lr"}
    assert hidden and lr_failures >= hidden, "under muP at 4x every hidden matrix needs lr/4"
    row = next(r for r in plain.failures if r.quantity == "lr" and r.tensor in hidden)
    assert row.ratio == pytest.approx(4.0) and "param_groups" in row.fix

    good = paramcalc.audit(model, torch.optim.AdamW(param_groups(model, d, 1e-3, widths)), d, widths)
    assert good.ok, good.text()
    # report.rows: one per tensor, in the derivation's order, holding every check
    assert [r.tensor for r in plain.rows] == list(d)
    assert {id(c) for r in plain.rows for c in r.checks} == {id(c) for c in plain.checks}
    assert {r.tensor for r in plain.rows if not r.ok} >= hidden and all(r.ok for r in good.rows)
    assert good.lr == pytest.approx(1e-3)


def test_tied_gpt2_readout_without_its_multiplier_is_caught():
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam")
    widths = at_times(d)
    model = hf_models.gpt2(widths)
    paramcalc.torch.emitted(d)["init_parameters"](model, widths)  # init, but no multipliers
    report = paramcalc.audit(model, torch.optim.AdamW(model.parameters()), d, widths)
    rows = [r for r in report.failures if r.quantity == "multiplier"]
    assert [r.tensor for r in rows] == ["lm_head"] and rows[0].expected == pytest.approx(0.25)
    tied_row = next(r for r in report.rows if r.tensor == "transformer.wte.weight")
    assert rows[0] in tied_row.checks  # the tied readout's multiplier counts on the tensor it uses
    with pytest.raises(paramcalc.UsageError, match="apply"):
        param_groups(model, d, 1e-3, widths)


def audit_rows(model, opt, d, widths, quantity, **kwargs):
    report = paramcalc.audit(model, opt, d, widths, **kwargs)
    return {r.tensor: r for r in report.failures if r.quantity == quantity}


def test_audit_catches_a_tied_embedding_rescaled_like_the_readout():
    """mup's issue 55: rescaling the readout's init by 1/m also rescales the embedding tied to it."""
    d = paramcalc.derive(spec_of("gpt2"), "mup", "adam")
    widths = at_times(d)
    model = built("gpt2", d, widths)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.25)  # the same tensor as transformer.wte.weight
    rows = audit_rows(model, torch.optim.AdamW(param_groups(model, d, 1e-3, widths)), d, widths, "init_std")
    assert list(rows) == ["transformer.wte.weight"] and rows["transformer.wte.weight"].ratio == pytest.approx(
        0.25, rel=0.05)


def test_audit_catches_weight_decay_that_shrinks_with_lr():
    d = paramcalc.derive(spec_of("llama"), "mup", "adam")
    widths = at_times(d)
    model = built("llama", d, widths)
    plain = paramcalc.derive(spec_of("llama"), "mup", "adam", weight_decay="coupled")
    coupled = param_groups(model, plain, 1e-3, widths, weight_decay=0.1)
    rows = audit_rows(model, torch.optim.AdamW(coupled), d, widths, "weight_decay", weight_decay=0.1)
    hidden = {n for n in d if d[n].role == "hidden" and d[n].tensor.kind == "weight"}
    assert hidden and set(rows) >= hidden and all(rows[n].ratio == pytest.approx(0.25) for n in hidden)
    independent = param_groups(model, d, 1e-3, widths, weight_decay=0.1)
    assert not audit_rows(model, torch.optim.AdamW(independent), d, widths, "weight_decay", weight_decay=0.1)
    # without the base value, ViT's patch embedding (lr factor 1) and its hidden matrices (1/4) disagree
    d = paramcalc.derive(spec_of("vit"), "mup", "adam")
    widths = at_times(d)
    model = built("vit", d, widths)
    plain = paramcalc.derive(spec_of("vit"), "mup", "adam", weight_decay="coupled")
    coupled = param_groups(model, plain, 1e-3, widths, weight_decay=0.1)
    assert audit_rows(model, torch.optim.AdamW(coupled), d, widths, "weight_decay")


def test_audit_catches_a_forgotten_attention_scale():
    """With the heads fixed, d_head grows: muP's logit scale is sqrt(d_head_base)/d_head, Llama's own
    1/sqrt(d_head) is too large by sqrt(d_head / d_head_base) (2 at 4x)."""
    spec = paramcalc.infer_spec(hf_models.llama, {**hf_models.WIDTHS["llama"], "n_heads": 4, "n_kv_heads": 2})
    d = paramcalc.derive(spec, "mup", "adam")
    widths = at_times(d)
    model = built("llama", d, widths)
    attn = model.model.layers[0].self_attn
    assert attn.head_dim == 64
    attn.scaling = attn.head_dim ** -0.5  # as Llama builds it
    rows = audit_rows(model, torch.optim.AdamW(param_groups(model, d, 1e-3, widths)), d, widths,
                      "attention_scale")
    assert list(rows) == ["model.layers.0.self_attn"]
    assert rows["model.layers.0.self_attn"].ratio == pytest.approx(2.0)


def test_param_groups_decay_only_matrices_unless_asked():
    d = paramcalc.derive(spec_of("vit"), "mup", "adam")
    widths = at_times(d)
    model = built("vit", d, widths)
    base = d.evaluate()
    here = d.evaluate(widths)

    def decays(**kwargs):
        dd = paramcalc.derive(spec_of("vit"), "mup", "adam", **kwargs) if kwargs else d
        return {n: g["weight_decay"] for g in param_groups(model, dd, 1e-3, widths, weight_decay=0.1)
                for n in g["names"]}

    wd = decays()
    kinds = {n: d[n].tensor.kind for n in d}
    assert {n for n, v in wd.items() if v} == {n for n, k in kinds.items() if k == "weight"}
    for n, v in wd.items():  # independent: lr * weight_decay is what it is at the base widths
        if v:
            assert 1e-3 * here[n]["lr"] * v == pytest.approx(1e-3 * base[n]["lr"] * 0.1, rel=1e-12), n
    with_gains = decays(decay=("weight", "gain"))
    assert {n for n, v in with_gains.items() if v} == {n for n, k in kinds.items() if k in ("weight", "gain")}
    with pytest.raises(ValueError, match="decay"):
        decays(decay=("weights",))
