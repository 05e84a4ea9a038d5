"""`--emit torch`: run the emitted module on real torch models and check what it does.

Every check compares against the engine (`derive(...).evaluate(...)`): the std of each
re-initialised tensor, the learning rate each tensor gets from a real torch optimizer, and the
output of each layer once `apply_multipliers` hooks it.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
import types
from collections.abc import Mapping
from html.parser import HTMLParser

import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import paramcalc  # noqa: E402
from paramcalc import registry  # noqa: E402
from paramcalc.emit import emit  # noqa: E402
from paramcalc.emit.tables import render_table  # noqa: E402
from paramcalc.engine.derivation import resolve_widths  # noqa: E402
from tests.conftest import EXAMPLES, small_gpt_example  # noqa: E402

PARAMS = tuple(registry.PARAMETRIZATIONS)
OPTS = tuple(registry.OPTIMIZERS)

# An MLP on one-hot inputs with biases (two of them normal-initialised) and unequal widths.
ONE_HOT_MLP = {
    "name": "one_hot_mlp",
    "widths": {"vocab": 40, "d": {"base": 16}, "n_out": 6},
    "layers": [
        {"name": "embed", "fan_in": "vocab", "fan_out": "d", "input": "sparse", "bias": True,
         "bias_init": "normal"},
        {"name": "fc1", "fan_in": "d", "fan_out": "3*d", "bias": True},
        {"name": "fc2", "fan_in": "3*d", "fan_out": "d", "bias": True, "bias_init": "normal"},
        {"name": "head", "fan_in": "d", "fan_out": "n_out", "bias": True},
    ],
}
WIDTHS = {"d": 64}  # not the base: defaults that leaked in would show
GPT_WIDTHS = {"d_model": 32, "n_heads": 2}  # of small_gpt_example(): vocab 50, ctx 8, d_head 16


def load_module(code: str, name: str = "emitted") -> types.ModuleType:
    """Execute emitted code as a module."""
    module = types.ModuleType(name)
    exec(compile(code, f"<{name}>", "exec"), module.__dict__)
    return module


def imported_modules(code: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def build_model(spec: paramcalc.Spec, widths: Mapping[str, int], dtype=torch.float64) -> nn.Module:
    """A torch module whose submodule paths are the spec's layer names, at ``widths``.

    Linear layers are ``nn.Linear``, embeddings ``nn.Embedding``, norms ``nn.LayerNorm`` /
    ``nn.RMSNorm``; a tied layer shares its owner's weight Parameter. Parameters keep torch's init.
    """
    at = symbol_values(spec, widths)

    def dim(expr: sympy.Expr) -> int:
        return int(expr.xreplace(at))

    root = nn.Module()
    for layer in spec.layers:
        attrs = layer.attrs
        if layer.kind == "linear":
            module = nn.Linear(dim(attrs["fan_in"]), dim(attrs["fan_out"]), bias="bias" in layer.params)
            if attrs.get("tie"):
                module.weight = root.get_parameter(layer.params["weight"])
        elif layer.kind == "embedding":
            module = nn.Embedding(dim(attrs["fan_in"]), dim(attrs["fan_out"]))
        elif layer.kind == "norm" and attrs["norm"] == "layernorm":
            module = nn.LayerNorm(dim(attrs["dim"]), bias="bias" in layer.params)
        elif layer.kind == "norm":
            module = nn.RMSNorm(dim(attrs["dim"]))
        else:
            continue  # attention and mlp blocks hold no parameters of their own
        parent = root
        *path, leaf = layer.name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, module)
    return root.to(dtype)


def symbol_values(spec: paramcalc.Spec, widths: Mapping[str, int]) -> dict[sympy.Symbol, sympy.Integer]:
    """Width symbol -> value: ``widths`` over the spec's values."""
    return {spec.widths[k].symbol: sympy.Integer(v) for k, v in resolve_widths(spec, widths).items()}


def tolerance(numel: int) -> float:
    """Relative tolerance of an empirical std over ``numel`` Gaussian draws: 6 standard errors."""
    return 6 / math.sqrt(2 * numel)


def emitted(d: paramcalc.Derivation) -> types.ModuleType:
    code = emit(d, "torch")
    assert imported_modules(code) == {"math", "torch"}
    return load_module(code)


def check_init(module: types.ModuleType, model: nn.Module, d: paramcalc.Derivation, widths) -> None:
    generator = torch.Generator().manual_seed(0)
    module.init_parameters(model, widths, generator=generator)
    expected = d.evaluate(widths)
    for name, p in d.items():
        tensor = model.get_parameter(name).detach()
        std = expected[name]["init_std"]
        mean = float(p.init_mean.xreplace(symbol_values(d.spec, widths)))
        if std == 0:
            assert torch.all(tensor == mean), name
        else:
            assert tensor.std().item() == pytest.approx(std, rel=tolerance(tensor.numel())), name
            assert abs(tensor.mean().item() - mean) < 6 * std / math.sqrt(tensor.numel()), name


@pytest.mark.parametrize("opt", OPTS)
@pytest.mark.parametrize("param", PARAMS)
def test_init_and_learning_rates_match_the_derivation(param, opt):
    d = paramcalc.derive(ONE_HOT_MLP, param, opt)
    module = emitted(d)
    model = build_model(d.spec, WIDTHS)
    check_init(module, model, d, WIDTHS)

    expected = d.evaluate(WIDTHS)
    lr = 0.01
    groups = module.param_groups(model, lr, WIDTHS)
    seen = {}
    for group in groups:
        for name, tensor in zip(group["names"], group["params"], strict=True):
            assert tensor is model.get_parameter(name)
            assert group["lr"] == pytest.approx(lr * expected[name]["lr"], rel=1e-12), name
            assert group["lr_factor"] == pytest.approx(expected[name]["lr"], rel=1e-12), name
            seen[name] = tensor
    assert sorted(seen) == sorted(d) == sorted(n for n, _ in model.named_parameters())

    # A real torch optimizer takes the groups; one step on unit gradients moves each tensor by
    # lr * factor (Adam's first step is lr * g / (|g| + eps)).
    optimizer = (torch.optim.SGD if opt == "sgd" else torch.optim.Adam)(groups)
    before = {name: t.detach().clone() for name, t in seen.items()}
    for t in seen.values():
        t.grad = torch.ones_like(t)
    optimizer.step()
    for name, t in seen.items():
        step = (before[name] - t.detach()).flatten()
        assert torch.allclose(step, torch.full_like(step, lr * expected[name]["lr"]), rtol=1e-6), name

    # Every multiplier is 1 in these forms: apply_multipliers hooks nothing.
    assert module.apply_multipliers(model, WIDTHS) == []


def layer_outputs(model: nn.Module, d: paramcalc.Derivation, widths) -> dict[str, torch.Tensor]:
    """Each parameterised layer's output on a fixed input."""
    generator = torch.Generator().manual_seed(1)
    out = {}
    for layer in d.spec.layers:
        if not layer.params:
            continue
        module = model.get_submodule(layer.name)
        if isinstance(module, nn.Embedding):
            x = torch.randint(0, module.num_embeddings, (5,), generator=generator)
        else:
            n = module.in_features if isinstance(module, nn.Linear) else module.normalized_shape[0]
            x = torch.randn(5, n, generator=generator, dtype=torch.float64)
        out[layer.name] = module(x).detach()
    return out


def expected_after(before: torch.Tensor, module: nn.Module, w_mult: float, b_mult: float | None):
    """The layer computes with w_mult * W and b_mult * b: out = w_mult * (out - b) + b_mult * b."""
    bias = getattr(module, "bias", None)
    if bias is None or b_mult is None:
        return w_mult * before
    bias = bias.detach()
    return w_mult * (before - bias) + b_mult * bias


def check_multipliers(d: paramcalc.Derivation, widths) -> None:
    module = emitted(d)
    model = build_model(d.spec, widths)
    module.init_parameters(model, widths, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # non-zero biases, so that bias multipliers show
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(generator=torch.Generator().manual_seed(3))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = layer_outputs(model, d, widths)
    params = d.evaluate(widths)
    tied = d.evaluate_tied(widths)
    for _ in range(2):  # a second call replaces the hooks of the first
        handles = module.apply_multipliers(model, widths)
    after = layer_outputs(model, d, widths)
    hooked = 0
    for layer in d.spec.layers:
        if not layer.params:
            continue
        weight, bias = layer.params.get("weight"), layer.params.get("bias")
        w_mult = tied[layer.name]["multiplier"] if layer.name in d.tied else params[weight]["multiplier"]
        b_mult = params[bias]["multiplier"] if bias else None
        target = expected_after(before[layer.name], model.get_submodule(layer.name), w_mult, b_mult)
        assert torch.allclose(after[layer.name], target, rtol=1e-12, atol=1e-12), layer.name
        hooked += w_mult != 1 or (b_mult is not None and b_mult != 1)
    assert hooked > 0 and len(handles) == hooked
    # Names and values unchanged: checkpoints and param_groups keep working.
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    for handle in handles:
        handle.remove()
    removed = layer_outputs(model, d, widths)
    assert all(torch.equal(removed[k], v) for k, v in before.items())


@pytest.mark.parametrize("opt", OPTS)
def test_apply_multipliers_scales_weight_and_bias_exactly(opt):
    d = paramcalc.derive(ONE_HOT_MLP, "mup", opt, form="table8")
    # The abc-symmetry gives every tensor its own multiplier, weights and biases apart.
    shifted = d.shift({"embed.weight": 3, "embed.bias": sympy.Rational(1, 2), "fc1.weight": 2,
                       "fc2.bias": 5, "head.bias": sympy.Symbol("d", positive=True) / 16})
    for derivation in (d, shifted):
        check_multipliers(derivation, WIDTHS)


@pytest.mark.parametrize("param", ["spectral", "mup"])
def test_gpt_tied_readout_and_attention_scales(param):
    d = paramcalc.derive(small_gpt_example(), param, "adam")
    module = emitted(d)
    model = build_model(d.spec, GPT_WIDTHS)
    check_init(module, model, d, GPT_WIDTHS)
    # Groups for a readout whose multiplier (not 1 at 2x base) does not act are refused.
    with pytest.raises(ValueError, match=r"multipliers of \['lm_head'\].*call apply_multipliers"):
        module.param_groups(model, 1e-3, GPT_WIDTHS)
    module.apply_multipliers(model, GPT_WIDTHS)
    # The tied weight is listed once, under its owner.
    names = [n for g in module.param_groups(model, 1e-3, GPT_WIDTHS) for n in g["names"]]
    assert names.count("wte.weight") == 1 and len(names) == len(d)
    # The readout computes with the multiplier of its own use; the embedding with its own (1).
    assert module.TIED == {"lm_head": "wte.weight"}
    check_multipliers(d, GPT_WIDTHS)
    scales = module.attention_scales(GPT_WIDTHS)
    assert scales == pytest.approx(d.evaluate_constants(GPT_WIDTHS), rel=1e-12)
    assert pytest.approx(d.evaluate_constants(), rel=1e-12) == module.ATTENTION_SCALES


def test_module_level_table_and_defaults():
    d = paramcalc.derive(EXAMPLES / "mlp.yaml", "mup", "adam", form="table8")
    module = emitted(d)
    assert (module.SPEC, module.PARAMETRIZATION, module.OPTIMIZER, module.FORM) == (
        "mlp", "mup", "adam", "table8")
    assert paramcalc.__version__ == module.PARAMCALC_VERSION
    assert module.WIDTHS == {"n_in": 3072, "d": 256, "n_out": 10}
    at_default = module.scales()
    for name, v in d.evaluate().items():
        for q in ("init_std", "lr", "multiplier"):
            assert module.PARAMETERS[name][q] == v[q]  # printed from the engine's numbers
            assert at_default[name][q] == pytest.approx(v[q], rel=1e-12)
        assert module.PARAMETERS[name]["shape"] == at_default[name]["shape"]
    assert module.PARAMETERS["head.weight"]["shape"] == (10, 256)
    assert module.scales({"d": 1024})["head.weight"]["multiplier"] == 0.25
    # --widths changes the defaults of the emitted functions, not the base widths.
    wide = load_module(emit(d, "torch", {"d": 1024}))
    assert wide.WIDTHS["d"] == 1024 and wide.scales()["head.weight"]["multiplier"] == 0.25
    assert wide.PARAMETERS["fc2.weight"]["lr"] == 0.25


def test_user_errors_say_what_to_do():
    d = paramcalc.derive(ONE_HOT_MLP, "spectral", "sgd")
    module = emitted(d)
    model = build_model(d.spec, WIDTHS)
    with pytest.raises(ValueError, match="pass the widths the model is built with"):
        module.init_parameters(model)  # built at d=64, spec default d=16
    with pytest.raises(ValueError, match="unknown width 'dd'"):
        module.scales({"dd": 3})
    with pytest.raises(ValueError, match="positive integer"):
        module.scales({"d": 0})
    # A fixed width passed with another value would silently change roles: refused, with the fix.
    with pytest.raises(ValueError, match=r"width 'vocab' is fixed at 40 .* `vocab: \{base: 40\}`"):
        module.init_parameters(model, {"d": 64, "vocab": 80})
    assert module.scales({"d": 64, "vocab": 40}) == module.scales({"d": 64})  # its own value is fine
    model.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"would not be trained: \['extra.weight', 'extra.bias'\]"):
        module.param_groups(model, 0.1, WIDTHS)
    del model.extra
    model.fc1 = nn.Identity()
    with pytest.raises(ValueError, match="no parameter 'fc1.weight'"):
        module.init_parameters(model, WIDTHS)


def test_the_papers_own_width_symbols_work_end_to_end():
    """``n``, ``n0`` and ``n_l`` are width symbols like any other (only sqrt, Min, Max are not)."""
    spec = {"name": "paper", "widths": {"n": {"base": 16}, "n0": 8, "n_l": {"base": 4}},
            "layers": [{"name": "a", "fan_in": "n0", "fan_out": "n"},
                       {"name": "b", "fan_in": "n", "fan_out": "n_l"}]}
    d = paramcalc.derive(spec, "mup", "adam")
    module = emitted(d)
    model = build_model(d.spec, {"n": 32, "n_l": 8})
    module.init_parameters(model, {"n": 32, "n_l": 8})
    assert module.scales({"n": 32, "n_l": 8})["b.weight"]["lr"] == pytest.approx(
        d.evaluate({"n": 32, "n_l": 8})["b.weight"]["lr"])


def code_tokens(code: str) -> list[tuple[int, str]]:
    """The tokens that are code: everything but string literals and comments."""
    skip = {tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE}
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type not in skip]


HOSTILE = {
    "name": "x'''\"\"\"\\ \u2028 # {{ }} ${math} <script>&%_~^",
    "widths": {"math": 7, "__import__": {"base": 8}, "w": 3, "torch": {"base": 4}},
    "layers": [
        {"name": "import.class", "fan_in": "math", "fan_out": "__import__*torch", "bias": True},
        {"name": "def.0.return", "fan_in": "__import__*torch", "fan_out": "w"},
    ],
}
PLAIN = {
    "name": "plain",
    "widths": {"a": 7, "b": {"base": 8}, "c": 3, "e": {"base": 4}},
    "layers": [
        {"name": "l1", "fan_in": "a", "fan_out": "b*e", "bias": True},
        {"name": "l2", "fan_in": "b*e", "fan_out": "c"},
    ],
}


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_user_text_stays_inside_literals_and_comments(target):
    """A spec whose names are keywords (layers), builtins and module names (widths) and quote soup
    gives the same code tokens as a plain one: names reach the code only as string literals and
    one-line comments."""
    hostile = paramcalc.derive(HOSTILE, "mup", "adam")
    plain = paramcalc.derive(PLAIN, "mup", "adam")
    code = emit(hostile, target)
    assert code_tokens(code) == code_tokens(emit(plain, target))
    module = load_module(code)
    assert HOSTILE["name"] == module.SPEC
    at = {"__import__": 16, "torch": 8}
    got = module.scales(at)
    for name, v in hostile.evaluate(at).items():
        assert got[name]["lr"] == pytest.approx(v["lr"], rel=1e-12)
        assert got[name]["init_std"] == pytest.approx(v["init_std"], rel=1e-12)


# Any spec name the schema accepts: no C0 control characters, at most 100 characters.
spec_names = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters=[*map(chr, range(32)), "\x7f"]),
    min_size=1, max_size=100,
)


def constant(code: str, name: str):
    """The value of a module-level ``NAME = <literal>`` in ``code``, read without running it."""
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise KeyError(name)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=spec_names)
def test_any_spec_name_gives_the_same_code(name):
    d = paramcalc.derive({**PLAIN, "name": name}, "mup", "sgd")
    plain = paramcalc.derive(PLAIN, "mup", "sgd")
    for target in ("torch", "jax"):
        code = emit(d, target)
        assert code_tokens(code) == code_tokens(emit(plain, target))
        assert constant(code, "SPEC") == name
    one_line = re.sub(r"[\r\n\t\v\f\x1c-\x1e\x85\u2028\u2029]", " ", name)
    # Markdown: the title is one line that unescapes to the name.
    title = emit(d, "markdown").splitlines()[0]
    assert re.sub(r"\\(.)", r"\1", title) == f"## {one_line}: muP, SGD (table3 form)"
    table = render_table(PLAIN | {"name": name}, "markdown", optimizers=["sgd"]).splitlines()[0]
    assert re.sub(r"\\(.)", r"\1", table) == f"## {one_line}: spectral, muP, NTP, SP"
    # LaTeX: once the escapes are taken out, no special character is left.
    tex = emit(d, "latex").splitlines()[0]
    prefix, suffix = f"% Generated by paramcalc {paramcalc.__version__}: ", r": $\mu$P, SGD (table3 form)"
    assert tex.startswith(prefix) and tex.endswith(suffix)
    bare = re.sub(r"\\text[a-z]+\{\}|\\[{}$&#_%]", "", tex[len(prefix):-len(suffix)])
    assert not set(bare) & set("\\{}$&#^_%~<>|"), tex
    # HTML: no element comes from the name, and its text reads back.
    checker = _HtmlText()
    checker.feed(emit(d, "html"))
    assert checker.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "p", "code", "table",
                            "caption", "thead", "tbody", "tr", "th", "td", "math", "mrow", "mfrac",
                            "msqrt", "mi", "mn", "mo", "msub", "msup", "sub"}
    assert f"{name}: \u03bcP, SGD" in "".join(checker.text)


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("form, expected", [("features", math.sqrt(2 / 3072)),
                                            ("norm", math.sqrt(2 * 16) / 3072)])
def test_init_features_emitted_code_draws_appendix_a_first_layer(form, expected):
    """At d = 16 < n0 = 3072 the emitted code draws App. A's sigma_1 = sqrt(2/n0) with
    ``init: features``, and Parametrization 1's sqrt(2/n0) * sqrt(d/n0) without (numbers typed here)."""
    spec = paramcalc.load_spec({
        "name": "appendix-a", "widths": {"n0": 3072, "d": {"base": 16}, "n_out": 1},
        "layers": [{"name": "fc1", "fan_in": "n0", "fan_out": "d", "gain": "sqrt(2)", "init": form},
                   {"name": "fc2", "fan_in": "d", "fan_out": "d", "gain": "sqrt(2)"},
                   {"name": "head", "fan_in": "d", "fan_out": "n_out", "gain": "sqrt(2)"}]})
    model = paramcalc.build_model(spec)
    emitted(paramcalc.derive(spec, "spectral", "sgd")).init_parameters(
        model, generator=torch.Generator().manual_seed(0))
    weight = model.get_parameter("fc1.weight").detach()
    assert weight.std().item() == pytest.approx(expected, rel=tolerance(weight.numel()))
