"""The library side of the factory route: widths_at (library and emitted), the traps that must be
errors or warnings, the --data hook's checks, and the README's walk-through in examples/your_model.py."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import paramcalc  # noqa: E402
from paramcalc.emit import emit  # noqa: E402
from paramcalc.errors import FactoryError  # noqa: E402

SPEC = {"name": "gqa", "widths": {"d_model": {"base": 64}, "n_heads": {"base": 4}, "n_kv_heads": 2,
                                  "vocab": 100},
        "layers": [{"name": "emb", "kind": "embedding", "vocab": "vocab", "dim": "d_model"},
                   {"name": "fc", "fan_in": "d_model", "fan_out": "4*d_model"},
                   {"name": "head", "fan_in": "4*d_model", "fan_out": "vocab"}]}


def emitted_namespace(d) -> dict:
    namespace: dict = {}
    exec(compile(emit(d, "torch"), "<emitted>", "exec"), namespace)  # noqa: S102
    return namespace


def test_widths_at_fills_proportional_widths_in_library_and_emitted_code():
    d = paramcalc.derive(SPEC, "mup", "adam")
    want = {"d_model": 256, "n_heads": 16, "n_kv_heads": 2, "vocab": 100}
    assert paramcalc.widths_at(d, d_model=256) == want
    assert paramcalc.widths_at(SPEC, n_heads=16) == want
    assert paramcalc.widths_at(d) == {"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "vocab": 100}
    module = emitted_namespace(d)
    assert module["widths_at"](d_model=256) == want and module["SCALING"] == {"d_model": 64, "n_heads": 4}
    with pytest.raises(ValueError, match="not an integer"):
        paramcalc.widths_at(d, d_model=72)  # n_heads = 4.5
    with pytest.raises(ValueError, match="not an integer"):
        module["widths_at"](d_model=72)


@pytest.mark.parametrize("where", ["library", "emitted"])
def test_a_fixed_width_cannot_be_changed_at_use_time(where):
    d = paramcalc.derive(SPEC, "mup", "adam")
    def library(**w):
        return paramcalc.widths_at(d, **w)

    call = emitted_namespace(d)["widths_at"] if where == "emitted" else library
    with pytest.raises(ValueError, match=r"'n_kv_heads' is fixed at 2 .*declare it scaling"):
        call(d_model=128, n_kv_heads=8)


def test_attention_written_as_plain_linears_warns_with_the_fix():
    spec = {"name": "att", "widths": {"d": {"base": 32}, "n0": 8},
            "layers": [{"name": "inp", "fan_in": "n0", "fan_out": "d"},
                       *({"name": f"blk.{p}", "fan_in": "d", "fan_out": "d"} for p in ("q", "k", "v", "o"))]}
    with pytest.warns(UserWarning, match=r"blk: q, k, v projections written as plain linear .*attention"):
        paramcalc.derive(spec, "mup", "adam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paramcalc.derive("examples/gpt.yaml", "mup", "adam")  # attention declared: no warning


class SelfAttention(nn.Module):
    """A user's attention without ``head_dim``: its projections are plain linears to paramcalc."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))


def test_a_live_attention_paramcalc_cannot_see_warns():
    def factory(w):
        return nn.Sequential(nn.Embedding(50, w["d"]), SelfAttention(w["d"]), nn.Linear(w["d"], 50))

    spec = paramcalc.infer_spec(factory, {"d": {"base": 32}})
    with pytest.warns(UserWarning, match=r"1: q, k, v projections written as plain linear"):
        paramcalc.derive(spec, "mup", "adam")


def test_emit_and_verify_stay_callable_after_their_submodules_are_imported():
    import paramcalc.auditing  # noqa: F401
    import paramcalc.emit.docs  # noqa: F401
    import paramcalc.verify.plan  # noqa: F401

    d = paramcalc.derive("examples/mlp.yaml", "mup", "adam")
    assert paramcalc.emit(d, "json").startswith("{")
    assert callable(paramcalc.verify) and callable(paramcalc.audit)


def test_data_hook_checks_what_it_returns():
    from paramcalc.verify.data import hook_batch

    def good(batch, seed):
        return torch.zeros(batch, 3), torch.zeros(batch, dtype=torch.long)

    assert hook_batch(good, "m:good", loss="ce", batch=2, seed=0).x.shape == (2, 3)
    for hook, loss, match in [
        (lambda b, s: torch.zeros(b), "ce", "expected a tuple"),
        (good, "mse", "integer targets"),
        (lambda b, s: (torch.zeros(b), torch.zeros(b)), "ce", "float targets"),
        (lambda b, s: 1 / 0, "ce", "ZeroDivisionError"),
    ]:
        with pytest.raises(FactoryError, match=match):
            hook_batch(hook, "m:hook", loss=loss, batch=2, seed=0)


def test_readme_walk_through_runs():
    from examples import your_model

    results = your_model.main()
    assert "cnn" in results
    for name, r in results.items():
        assert r["audit_ok"] and r["plain_failures"] > 0, name
        assert r["losses"][-1] < r["losses"][0], name  # three AdamW steps on one batch lower its loss


def test_readme_quick_start_runs():
    """The README's first Python block (the factory route on Hugging Face GPT-2), executed as is."""
    import re

    from tests.conftest import ROOT

    pytest.importorskip("transformers")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "infer_spec" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the assert inside is the check
    assert namespace["widths"]["n_heads"] == 16 and len(namespace["opt"].param_groups) > 1
