"""`--emit jax`: run the emitted module with jax and optax and check what it does.

`init_params` shapes (flax layout) and stds, and the first optax update on all-ones gradients,
which must be `-lr * factor` for every tensor under SGD, Adam, AdamW and Lion (entrywise laws) and
have spectral norm `lr * factor * s(A, B)` on the matrices Muon trains, against the engine's numbers.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import sympy
import yaml

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import paramcalc  # noqa: E402
from paramcalc.emit import emit  # noqa: E402
from paramcalc.engine.optimizers.base import norm_for  # noqa: E402
from tests.conftest import EXAMPLES, small_gpt_example  # noqa: E402
from tests.test_emit_torch import (  # noqa: E402
    GPT_WIDTHS,
    ONE_HOT_MLP,
    OPTS,
    PARAMS,
    WIDTHS,
    imported_modules,
    load_module,
    symbol_values,
    tolerance,
)


def emitted(d: paramcalc.Derivation, widths=None) -> types.ModuleType:
    code = emit(d, "jax", widths)
    assert imported_modules(code) == {"math", "jax", "optax"}
    return load_module(code)


def flax_shape(d: paramcalc.Derivation, name: str, widths) -> tuple[int, ...]:
    t = d[name].tensor
    at = symbol_values(d.spec, widths)
    dims = (t.fan_out,) if t.layout == "vector" else (t.fan_in, t.fan_out)
    return tuple(int(s.xreplace(at)) for s in dims)


def check_init(module: types.ModuleType, d: paramcalc.Derivation, widths) -> dict:
    params = module.init_params(jax.random.PRNGKey(0), widths)
    expected = d.evaluate(widths)
    at = symbol_values(d.spec, widths)
    count = 0
    for name, p in d.items():
        layer, leaf = module.LEAVES[name]
        value = params[layer][leaf]
        count += 1
        assert value.shape == flax_shape(d, name, widths), name
        assert value.dtype == jax.numpy.float32, name
        std, mean = expected[name]["init_std"], float(p.init_mean.xreplace(at))
        value = np.asarray(value, dtype=np.float64)
        if std == 0:
            assert (value == mean).all(), name
        else:
            assert value.std() == pytest.approx(std, rel=tolerance(value.size)), name
            assert abs(value.mean() - mean) < 6 * std / math.sqrt(value.size), name
    assert count == len(d) == sum(len(leaves) for leaves in params.values())
    return params


def check_first_update(module: types.ModuleType, d: paramcalc.Derivation, params, widths) -> None:
    lr = 0.01
    optimizer = module.make_optimizer(lr, widths)
    state = optimizer.init(params)
    grads = jax.tree.map(lambda p: p * 0 + 1, params)
    updates, _ = jax.jit(optimizer.update)(grads, state, params)
    expected = d.evaluate(widths)
    at = symbol_values(d.spec, widths)
    for name in d:
        layer, leaf = module.LEAVES[name]
        step = np.asarray(updates[layer][leaf])
        if d[name].optimizer == "muon":
            # Orthogonalised: ||step||_* = lr * factor * Muon's shape factor (Newton-Schulz's five
            # quintic steps leave the singular value of a rank-one matrix within about 30% of 1).
            t = d[name].tensor
            law = norm_for(d.law(name), lr * expected[name]["lr"], 1, t.d_in, t.fan_out, t.matrix_shape)
            assert np.linalg.norm(step, 2) == pytest.approx(float(sympy.sympify(law).xreplace(at)), rel=0.35)
            continue
        target = -lr * expected[name]["lr"]
        assert step.min() == pytest.approx(target, rel=1e-5), name
        assert step.max() == pytest.approx(target, rel=1e-5), name


@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("param", PARAMS)
def test_init_and_first_update_match_the_derivation(param, opt):
    d = paramcalc.derive(ONE_HOT_MLP, param, opt)
    module = emitted(d)
    params = check_init(module, d, WIDTHS)
    assert set(params) == {"embed", "fc1", "fc2", "head"}
    assert set(params["fc1"]) == {"kernel", "bias"}
    check_first_update(module, d, params, WIDTHS)
    multipliers = module.multipliers(WIDTHS)
    for name, v in d.evaluate(WIDTHS).items():
        layer, leaf = module.LEAVES[name]
        assert multipliers[layer][leaf] == pytest.approx(v["multiplier"], rel=1e-12)
        assert module.MULTIPLIERS[layer][leaf] == d.evaluate()[name]["multiplier"]


def test_multipliers_and_schedules():
    d = paramcalc.derive(EXAMPLES / "mlp.yaml", "mup", "sgd", form="table8")
    module = emitted(d)
    assert module.MULTIPLIERS["head"] == {"kernel": 1.0}
    assert module.multipliers({"d": 1024})["head"]["kernel"] == 0.25
    params = module.init_params(jax.random.PRNGKey(1), {"d": 32})
    # A schedule works as the learning rate: each tensor gets schedule(step) * factor.
    optimizer = module.make_optimizer(optax.constant_schedule(0.5), {"d": 32})
    grads = jax.tree.map(lambda p: p * 0 + 1, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    lrs = d.evaluate({"d": 32})
    assert float(updates["fc2"]["kernel"][0, 0]) == pytest.approx(-0.5 * lrs["fc2.weight"]["lr"])
    assert float(updates["fc1"]["bias"][0]) == pytest.approx(-0.5 * lrs["fc1.bias"]["lr"])


def test_flax_modules_take_the_layout():
    linen = pytest.importorskip("flax.linen")
    spec = yaml.safe_load((EXAMPLES / "classifier.yaml").read_text(encoding="utf-8"))
    spec["widths"]["vocab"] = 30  # a fixed width: changed in the spec, not at use time
    module = emitted(paramcalc.derive(spec, "spectral", "adam"))
    params = module.init_params(jax.random.PRNGKey(2), {"d": 16})
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 16))
    out = linen.Dense(64).apply({"params": params["fc1"]}, x)
    assert jax.numpy.allclose(out, x @ params["fc1"]["kernel"] + params["fc1"]["bias"], atol=1e-5)
    ids = jax.numpy.array([0, 3, 29])
    table = linen.Embed(30, 16).apply({"params": params["embed"]}, ids)
    assert jax.numpy.array_equal(table, params["embed"]["embedding"][ids])


@pytest.mark.parametrize("opt", OPTS)
def test_gpt_tied_use_norms_and_attention(opt):
    d = paramcalc.derive(small_gpt_example(), "mup", opt)
    module = emitted(d)
    params = check_init(module, d, GPT_WIDTHS)
    assert set(params["blocks.0.ln_1"]) == {"scale", "bias"}
    assert set(params["wte"]) == {"embedding"} and "lm_head" not in params
    check_first_update(module, d, params, GPT_WIDTHS)
    assert module.TIED == {"lm_head": ("wte", "embedding")}
    tied = module.tied_multipliers(GPT_WIDTHS)
    assert tied["lm_head"] == pytest.approx(d.evaluate_tied(GPT_WIDTHS)["lm_head"]["multiplier"])
    assert pytest.approx({"lm_head": 1.0}) == module.TIED_MULTIPLIERS  # muP: 768/d_model at base
    assert module.attention_scales(GPT_WIDTHS) == pytest.approx(d.evaluate_constants(GPT_WIDTHS))


def test_unknown_parameters_are_named():
    d = paramcalc.derive(ONE_HOT_MLP, "spectral", "sgd")
    module = emitted(d)
    params = module.init_params(jax.random.PRNGKey(0), WIDTHS)
    params["extra"] = {"kernel": jax.numpy.zeros((2, 2))}
    with pytest.raises(ValueError, match=r"params\['extra'\]\['kernel'\] is not a tensor"):
        module.make_optimizer(0.1, WIDTHS).init(params)


IN_OUT_MLP = {
    "name": "in-out-mlp",
    "widths": {"n0": 16, "d": {"base": 32}, "n_out": 4},
    "layers": [
        {"name": "fc1", "fan_in": "n0", "fan_out": "d"},
        {"name": "up", "fan_in": "d", "fan_out": "4*d", "layout": "in_out"},
        {"name": "down", "fan_in": "4*d", "fan_out": "d", "layout": "in_out"},
        {"name": "head", "fan_in": "d", "fan_out": "n_out"},
    ],
}


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_muon_on_transposed_weights_meets_the_spectral_target(adjust):
    """Hugging Face ``Conv1D`` weights (``layout: in_out``) are read by torch's Muon as
    ``(fan_in, fan_out)``, by optax's as a flax kernel: the JAX module's factors are for optax's
    reading, so each Muon step has ``||dW||_* = lr sqrt(fan_out / fan_in)`` under spectral (the up
    projection twice the down's, 2 vs 1/2 here) in both."""
    d = paramcalc.derive(IN_OUT_MLP, "spectral", "muon", muon_adjust=adjust)
    module = emitted(d)
    widths = {"d": 64}
    params = module.init_params(jax.random.PRNGKey(0), widths)
    lr = 0.01
    optimizer = module.make_optimizer(lr, widths)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jax.numpy.asarray(  # rank one, as one example's gradient
        np.outer(rng.normal(size=p.shape[0]), rng.normal(size=p.shape[1])) if p.ndim == 2 else p * 0 + 1,
        dtype=p.dtype), params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    for layer, target in (("up", 2.0), ("down", 0.5)):
        step = np.asarray(updates[layer]["kernel"])
        assert np.linalg.norm(step, 2) == pytest.approx(lr * target, rel=0.35), (layer, adjust)
