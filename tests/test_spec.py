"""Loading specs: the contract's minimal form, and every kind of bad input as a clear SpecError."""

from __future__ import annotations

import pytest
import sympy
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import paramcalc
from paramcalc import SpecError, load_spec
from paramcalc.spec.load import parse_yaml
from paramcalc.symbolic import width_symbol
from tests.conftest import EXAMPLES, mlp_dict

CONTRACT_SPEC = """\
name: mlp
widths:
  n_in: 3072            # a fixed dimension: an integer
  d: {base: 256}        # a dimension that scales with width
  n_out: 10
layers:
  - name: fc1
    fan_in: n_in
    fan_out: d
    input: dense
    bias: true
  - {name: fc2, fan_in: d, fan_out: d}
  - {name: head, fan_in: d, fan_out: n_out}
"""


def test_contract_minimal_form(write_spec):
    spec = load_spec(write_spec(CONTRACT_SPEC))
    assert spec.name == "mlp"
    assert [t.name for t in spec.tensors] == [
        "fc1.weight", "fc1.bias", "fc2.weight", "head.weight",
    ]
    d = width_symbol("d")
    fc1 = spec.tensor("fc1.weight")
    assert (fc1.fan_in, fc1.fan_out, fc1.role) == (width_symbol("n_in"), d, "input")
    assert spec.tensor("fc1.bias").d_in == 1 and spec.tensor("fc1.bias").role == "input"
    assert spec.tensor("fc2.weight").role == "hidden"
    assert spec.tensor("head.weight").role == "output"
    assert spec.widths["d"].scaling and spec.widths["d"].value == 256
    assert not spec.widths["n_in"].scaling


def test_dict_and_file_agree(write_spec):
    import yaml

    from_file = load_spec(write_spec(CONTRACT_SPEC))
    from_dict = load_spec(yaml.safe_load(CONTRACT_SPEC))
    assert from_file.tensors == from_dict.tensors


def test_example_mlp_loads():
    spec = load_spec(EXAMPLES / "mlp.yaml")
    assert spec.tensors


def test_expressions_and_sparse_inputs():
    spec = load_spec({
        "name": "emb",
        "widths": {"vocab": 50257, "d": {"base": 128}},
        "layers": [
            {"name": "wte", "fan_in": "vocab", "fan_out": "d", "input": "sparse"},
            {"name": "up", "fan_in": "d", "fan_out": "4*d", "bias": True},
            {"name": "down", "fan_in": "4*d", "fan_out": "d"},
            {"name": "ln", "kind": "norm", "dim": "d", "bias": True},
        ],
    })
    d = width_symbol("d")
    assert spec.tensor("wte.weight").d_in == 1 and spec.tensor("wte.weight").role == "input"
    assert spec.tensor("up.weight").fan_out == 4 * d
    assert spec.tensor("down.weight").role == "hidden"
    gain = spec.tensor("ln.weight")
    assert (gain.kind, gain.init, gain.d_in, gain.shape) == ("gain", "ones", 1, (d,))
    assert spec.tensor("ln.bias").init == "zeros"


def test_gain_is_exact():
    spec = load_spec(mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d", "gain": "sqrt(2)"},
                                      {"name": "b", "fan_in": "d", "fan_out": "d", "gain": 0.5}]))
    assert spec.tensor("a.weight").gain == sympy.sqrt(2)
    assert spec.tensor("b.weight").gain == sympy.Rational(1, 2)


# --- bad input: (spec text or dict, field path in the message, words of the expectation) ---------

BAD_DICTS = [
    ({"name": "x", "widths": {"d": {"base": 64}}, "layers": []}, "layers", "at least one"),
    (mlp_dict(widths={"d": 0}), "widths.d", "positive integer"),
    (mlp_dict(widths={"d": -3}), "widths.d", "positive integer"),
    (mlp_dict(widths={"d": 2.5}), "widths.d", "positive integer"),
    (mlp_dict(widths={"d": True}), "widths.d", "positive integer"),
    (mlp_dict(widths={"d": {"base": 0}}), "widths.d.base", "greater than 0"),
    (mlp_dict(widths={"d": {"base": 64.5}}), "widths.d.base", "integer"),
    (mlp_dict(widths={"d": {"bass": 64}}), "widths.d.bass", "did you mean 'base'"),
    (mlp_dict(widths={"sqrt": 4}), "widths", "reserved"),
    (mlp_dict(widths={"1d": 4}), "widths", "identifier"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "dd", "fan_out": "d"}]), "layers[0].fan_in",
     "undefined symbol 'dd'"),
    (mlp_dict(layers=[{"name": "a", "fan_inn": "d", "fan_in": "d", "fan_out": "d"}]),
     "layers[0].fan_inn", "did you mean 'fan_in'"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d"}]), "layers[0].fan_out", "missing"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d", "input": "onehot"}]),
     "layers[0].input", "'dense' or 'sparse'"),
    (mlp_dict(layers=[{"name": "a", "kind": "pooling", "fan_in": "d", "fan_out": "d"}]),
     "layers[0].kind", "unknown layer kind 'pooling'"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d", "bias": "yes"}]),
     "layers[0].bias", "boolean"),
    (mlp_dict(layers=[{"name": "a", "fan_in": True, "fan_out": "d"}]), "layers[0].fan_in",
     "positive integer or an arithmetic expression"),
    (mlp_dict(layers=[{"name": "a", "fan_in": 0, "fan_out": "d"}]), "layers[0].fan_in", "positive"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d/3", "fan_out": "d"}]), "layers[0].fan_in",
     "positive integer at the spec's widths"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "4096-d", "fan_out": "d"}]), "layers[0].fan_in",
     "not positive when widths grow"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "65536/d", "fan_out": "d"}]), "layers[0].fan_in",
     "shrinks"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d", "gain": "-1"}]),
     "layers[0].gain", "positive"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d", "gain": "d"}]),
     "layers[0].gain", "undefined symbol"),
    (mlp_dict(layers=[{"name": "1a", "fan_in": "d", "fan_out": "d"}]), "layers[0].name",
     "identifier"),
    (mlp_dict(layers=[{"name": "a b", "fan_in": "d", "fan_out": "d"}]), "layers[0].name",
     "identifier"),
    (mlp_dict(layers=[{"name": "a", "fan_in": "d", "fan_out": "d"},
                      {"name": "a", "fan_in": "d", "fan_out": "d"}]), "layers[1].name",
     "duplicate layer name 'a'"),
    (mlp_dict(layers=[3]), "layers[0]", "mapping"),
    (mlp_dict(layers="fc1"), "layers", "list"),
    (mlp_dict(name=""), "name", "at least 1"),
    (mlp_dict(name="a\nb"), "name", "match"),
    (mlp_dict(nmae="x"), "nmae", "did you mean 'name'"),
    ({"widths": {}, "layers": [{"name": "a", "fan_in": 1, "fan_out": 1}]}, "name", "missing"),
]


@pytest.mark.parametrize(("data", "path", "expected"), BAD_DICTS)
def test_bad_dicts(data, path, expected):
    with pytest.raises(SpecError) as info:
        load_spec(data)
    message = str(info.value)
    assert message.startswith("<dict>: ")
    assert f"{path}" in message and expected in message, message
    assert "\n" not in message


BAD_FILES = [
    ("name: x\nlayers: [\n", "line 3", "YAML syntax error"),
    ("name: x\n  bad: indent\n", "line 2", "YAML syntax error"),
    ("- a\n- b\n", "", "expected a mapping"),
    ("just a string\n", "", "expected a mapping"),
    ("", "", "empty"),
    ("# only a comment\n", "", "empty"),
    ("a: 1\n---\nb: 2\n", "", "single document"),
    ("name: x\nlayers: !!python/object/apply:os.system ['echo pwned > /tmp/pwned']\n", "line 2",
     "could not determine a constructor"),
    (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi"))
        + "name: *i\n",
        "",
        "alias bomb",
    ),
    ("a: &a [1, *a]\n", "", "recursive alias"),
    ("[" * 5000 + "]" * 5000, "", ""),
]


@pytest.mark.parametrize(("text", "where", "expected"), BAD_FILES)
def test_bad_files(write_spec, text, where, expected):
    path = write_spec(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert where in message and expected in message, message


def test_python_tags_never_execute(write_spec, tmp_path):
    marker = tmp_path / "pwned"
    path = write_spec(f"name: !!python/object/apply:os.system ['touch {marker}']\nlayers: []\n")
    with pytest.raises(SpecError):
        load_spec(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        (b"name: x\x00\n", "NUL"),
        (bytes(range(256)), "not UTF-8"),
    ],
)
def test_binary_garbage(write_spec, content, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(write_spec(content))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)


def test_several_problems_reported_at_once():
    with pytest.raises(SpecError) as info:
        load_spec(mlp_dict(layers=[{"name": "a", "fan_in": "x", "fan_out": "y"}]))
    assert len(info.value.problems) == 2
    assert {p.path for p in info.value.problems} == {"layers[0].fan_in", "layers[0].fan_out"}


def test_spec_error_is_value_error():
    assert issubclass(paramcalc.SpecError, ValueError)


# The loader builds plain mappings, sequences and strings itself (the rest through PyYAML's own
# constructor): it must give exactly what yaml.safe_load gives, values and errors alike, except
# where a spec's rules are stricter (test_yaml_numbers_are_decimal_and_keys_unique).
_yaml_scalars = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["yes", "No", "on", "~", "null", "0x1f", "0o17", "1_000", "1:20", ".inf",
                       "2001-12-14", "=", "<<", "true", "3.0e5", "", " x ", "a: b", "- c", "#"])
)
_yaml_data = st.recursive(
    _yaml_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5) | st.booleans(), inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(data=_yaml_data, flow=st.sampled_from([None, True, False]))
def test_yaml_reading_matches_pyyaml(data, flow):
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert parse_yaml(text, "x") == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {x: 1, y: [a, 2]}\nder: {<<: *b, y: 3}\nlist: [*b, *b]\n",  # anchors and merge
        "m: {<<: {a: 1, b: 2}, b: 3}\n",  # a merge key without anchors
        "m: {<<: [{a: 1}, {a: 2, c: 4}]}\n",
        "k: {= : 5}\n",  # the value key
        "s: !!str 12\nf: !!float 3\nb: !!binary aGVsbG8=\nset: !!set {a, b}\nts: 2001-12-14t21:59:43Z\n",
        "o: !!omap [a: 1, b: 2]\np: !!pairs [a: 1, a: 2]\n",
        "? [a, b]\n: 1\n",  # an unhashable key
        "? {a: 1}\n: 1\n",
        "x: !custom 1\n",
        "[1, 2, {a: [3, {b: null}]}]\n",
        "- 1\n- -2\n- 0.5\n- 1.5e+3\n",
    ],
)
def test_yaml_reading_matches_pyyaml_on_edge_cases(text):
    try:
        expected = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        with pytest.raises(SpecError) as info:
            parse_yaml(text, "x")
        assert exc.problem in str(info.value)  # PyYAML's own error, e.g. "found unhashable key"
        return
    assert parse_yaml(text, "x") == expected


@pytest.mark.parametrize("anchors", [False, True])
def test_yaml_numbers_are_decimal_and_keys_unique(anchors):
    """YAML 1.1 reads 0x1f, 0o17, 1_000 and 1:20 (base 60) as integers and .inf, .nan as floats; in a
    spec they are strings (which fail where a number is expected), and a repeated key is an error
    where PyYAML silently keeps the last value. The same with anchors (PyYAML's own constructor)."""
    prefix = "a: &x 1\n" if anchors else ""
    got = parse_yaml(prefix + "v: [0x1f, 0o17, 1_000, 1:20, .inf, .nan, 12, -3, 0.5, 1.5e+3]\n", "x")
    assert got["v"] == ["0x1f", "0o17", "1_000", "1:20", ".inf", ".nan", 12, -3, 0.5, 1500.0]
    with pytest.raises(SpecError, match="duplicate key 'dup'"):
        parse_yaml(prefix + "dup: 1\ndup: 2\n", "x")
    with pytest.raises(SpecError, match=f"line {2 if anchors else 1}: duplicate key 'k'"):
        parse_yaml(prefix + ("m: {k: *x, k: 2}\n" if anchors else "m: {k: 1, k: 2}\n"), "x")
