"""A generator of architecture specs, plausible and hostile, for fuzzing (hypothesis strategies).

Used by ``tests/test_fuzz.py`` (a few hundred specs per CI run) and ``benchmarks/fuzz_specs.py``
(10,000). The contract checked: every spec is either accepted, and then derives, tabulates and emits
(JSON, torch) under any parametrization and optimizer, or rejected with one
:class:`paramcalc.errors.UserError`; nothing else (no traceback, no hang, no unbounded memory, no
non-finite number in what is emitted).
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

import paramcalc
from paramcalc.errors import UserError

NAMES = [
    "d",
    "n",
    "h",
    "v",
    "L",
    "n_in",
    "n_out",
    "d_model",
    "n_heads",
    "d_head",
    "vocab",
    "ctx",
    "lambda",
    "math",
    "w",
    "x y",
    "",
    "d\x1b[31m",
    "é",
    "_",
    "n_layers",
]
KINDS = ["linear", "embedding", "layernorm", "rmsnorm", "attention", "mlp", "conv2d", "parameter", "bogus"]
PARAMETRIZATIONS = ["spectral", "mup", "ntp", "sp"]
OPTIMIZERS = ["sgd", "adam", "adamw", "lion", "muon"]

ints = st.one_of(st.integers(1, 512), st.integers(-3, 3), st.sampled_from([10**12, 10**13, 10**40, 2**63]))
odd = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({"base": "x"}),
)


@st.composite
def expressions(draw: Any, names: list[str]) -> Any:
    """A dimension or constant: an integer, a width name, or a small expression over them."""
    atoms = st.one_of(ints.map(str), st.sampled_from(names or ["d"]))
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        return draw(ints)
    if kind <= 5:
        return draw(atoms)
    if kind <= 8:
        op = draw(st.sampled_from(["+", "-", "*", "/", "**", "//", "%"]))
        left, right = draw(atoms), draw(atoms)
        return f"({left}){op}({right})" if draw(st.booleans()) else f"{left} {op} {right}"
    return draw(odd)


@st.composite
def widths(draw: Any) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    out: dict[str, Any] = {}
    for name in chosen:
        pick = draw(st.integers(0, 9))
        if pick <= 4:
            out[name] = draw(ints)
        elif pick <= 8:
            out[name] = {"base": draw(ints)}
        else:
            out[name] = draw(odd)
    return out


@st.composite
def layer(draw: Any, names: list[str], depth: int, index: int) -> dict[str, Any]:
    e = expressions(names)
    name = draw(
        st.one_of(
            st.just(f"l{index}"),
            st.sampled_from(["fc", "wte", "attn", "mlp", "blocks", "a.b", "", "x" * 300, "l\x00"]),
        )
    )
    if depth < 2 and draw(st.integers(0, 6)) == 0:
        count = draw(st.one_of(st.integers(0, 4), st.sampled_from(names or ["d"]), odd))
        inner = draw(st.lists(layer(names, depth + 1, index * 10), min_size=0, max_size=3))
        return {"name": name, "repeat": count, "layers": inner}
    kind = draw(st.sampled_from(KINDS))
    entry: dict[str, Any] = {"name": name, "kind": kind}
    fields = {
        "linear": ["fan_in", "fan_out"],
        "embedding": ["vocab", "dim"],
        "layernorm": ["dim"],
        "rmsnorm": ["dim"],
        "attention": ["d_model", "n_heads", "d_head"],
        "mlp": ["d_model"],
        "conv2d": ["in_channels", "out_channels"],
        "parameter": ["shape"],
        "bogus": ["fan_in"],
    }[kind]
    for f in fields:
        if draw(st.integers(0, 12)) > 0:  # sometimes a required field is missing
            entry[f] = draw(e) if f != "shape" else draw(st.lists(e, min_size=0, max_size=3))
    if kind == "conv2d":
        entry["kernel_size"] = draw(st.one_of(st.integers(-1, 5), odd))
    extras = {
        "bias": st.one_of(st.booleans(), odd),
        "gain": e,
        "tie": st.sampled_from(["l0", "l1", "wte", "nope"]),
        "input": st.sampled_from(["dense", "sparse", "one-hot"]),
        "n_kv_heads": e,
        "expansion": st.one_of(st.integers(-1, 8), odd),
        "unknown_key": odd,
    }
    for key in draw(st.lists(st.sampled_from(sorted(extras)), max_size=2, unique=True)):
        entry[key] = draw(extras[key])
    return entry


@st.composite
def plausible(draw: Any) -> dict[str, Any]:
    """A well-formed chain or transformer with random sizes, then up to three mutations."""
    base = draw(st.sampled_from([8, 16, 64]))
    w: dict[str, Any] = {
        "d": {"base": base},
        "n_in": draw(st.integers(1, 40)),
        "n_out": draw(st.integers(1, 12)),
    }
    if draw(st.booleans()):
        layers: list[dict[str, Any]] = [
            {"name": "fc1", "fan_in": "n_in", "fan_out": "d", "bias": draw(st.booleans())}
        ]
        for i in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                layers.append(
                    {"name": f"ln{i}", "kind": draw(st.sampled_from(["layernorm", "rmsnorm"])), "dim": "d"}
                )
            layers.append(
                {"name": f"h{i}", "fan_in": "d", "fan_out": draw(st.sampled_from(["d", "2*d", "d"]))}
            )
            if layers[-1]["fan_out"] != "d":
                layers.append({"name": f"g{i}", "fan_in": layers[-1]["fan_out"], "fan_out": "d"})
        layers.append({"name": "head", "fan_in": "d", "fan_out": "n_out"})
    else:
        w |= {
            "vocab": draw(st.integers(2, 50)),
            "n_heads": {"base": 2},
            "d_head": 4,
            "L": draw(st.sampled_from([1, 2, {"base": 2}])),
        }
        w["d"] = {"base": 8}
        layers = [
            {"name": "wte", "kind": "embedding", "vocab": "vocab", "dim": "d"},
            {
                "name": "blocks",
                "repeat": "L",
                "layers": [
                    {"name": "ln_1", "kind": "layernorm", "dim": "d"},
                    {
                        "name": "attn",
                        "kind": "attention",
                        "d_model": "d",
                        "n_heads": "n_heads",
                        "d_head": "d_head",
                    },
                    {"name": "ln_2", "kind": "layernorm", "dim": "d"},
                    {"name": "mlp", "kind": "mlp", "d_model": "d"},
                ],
            },
            {"name": "ln_f", "kind": "layernorm", "dim": "d"},
            {
                "name": "lm_head",
                "fan_in": "d",
                "fan_out": "vocab",
                **({"tie": "wte"} if draw(st.booleans()) else {}),
            },
        ]
    spec = {"name": "m", "widths": w, "layers": layers}
    names = list(w)
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(layers))
        key = draw(st.sampled_from(sorted(target) + ["gain", "bias", "tie", "input"]))
        if key in ("name", "layers", "kind") and draw(st.booleans()):
            continue
        choice = draw(st.integers(0, 3))
        if choice == 0:
            target.pop(key, None)
        elif choice == 1:
            target[key] = draw(expressions(names))
        elif choice == 2:
            wname = draw(st.sampled_from(names))
            w[wname] = draw(st.one_of(ints, st.builds(lambda b: {"base": b}, ints), odd))
        else:
            layers.append(dict(target))  # a duplicate name
    return spec


@st.composite
def specs(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        return draw(plausible())
    w = draw(widths())
    names = [n for n in w if isinstance(n, str)]
    layers = [draw(layer(names, 0, i)) for i in range(draw(st.integers(0, 5)))]
    spec: dict[str, Any] = {
        "name": draw(st.sampled_from(["m", "gpt", "", "a\x1b[2J"])),
        "widths": w,
        "layers": layers,
    }
    if draw(st.integers(0, 5)) == 0:
        spec["activation"] = draw(st.one_of(st.sampled_from(["relu", "gelu", "tanh", "nope"]), odd))
    return spec


def check_spec(spec: dict[str, Any], parametrization: str, optimizer: str) -> str:
    """Load, derive, tabulate and emit ``spec``; return ``"rejected"`` or ``"accepted"``. Anything but a
    :class:`UserError` propagates (the test's failure)."""
    try:
        loaded = paramcalc.load_spec(spec)
    except UserError:
        return "rejected"
    try:
        d = paramcalc.derive(loaded, parametrization, optimizer)
    except UserError:
        return "rejected"
    except ValueError as exc:  # an option this spec cannot take must say so as a UserError
        raise AssertionError(f"derive raised a bare ValueError: {exc}") from exc
    from paramcalc.emit import emit

    try:
        text = emit(d, "json")
        emit(d, "torch")
        emit(d, "markdown")
    except UserError:
        return "rejected"
    values = json.loads(text)["values"]["params"]  # strict JSON: no Infinity or NaN reaches it
    assert all(math.isfinite(v) for entry in values.values() for v in entry.values() if isinstance(v, float))
    return "accepted"
