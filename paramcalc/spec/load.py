"""Reading an architecture file safely.

YAML goes through a safe loader (no tags that build Python objects). Before any value is
constructed, the node graph is measured: aliases may share nodes, so a small file can expand to
billions of values ("billion laughs"); the expanded size is bounded. Binary or non-UTF-8 input,
syntax errors (with their line), non-mapping documents and every schema problem become a
:class:`~paramcalc.errors.SpecError` naming the file and the field path.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import stat
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from paramcalc.errors import Problem, SpecError, format_path
from paramcalc.spec.architecture import Spec
from paramcalc.spec.builder import build_spec

__all__ = ["load_spec"]

MAX_BYTES = 16 * 1024 * 1024
MAX_NODES = 500_000


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any] | Spec) -> Spec:
    """Load and validate an architecture spec from a YAML file path, YAML text (a string with a
    newline, such as :meth:`Spec.to_yaml` writes) or a mapping.

    >>> spec = load_spec({"name": "mlp", "widths": {"d": {"base": 64}},
    ...                   "layers": [{"name": "fc", "fan_in": "d", "fan_out": "d"}]})
    >>> [t.name for t in spec.tensors]
    ['fc.weight']
    """
    if isinstance(source, Spec):
        return source
    if isinstance(source, Mapping):
        return _validate(dict(source), "<dict>")
    if isinstance(source, str) and "\n" in source:  # YAML text (Spec.to_yaml), not a path
        return _validate(parse_yaml(source, "<yaml text>"), "<yaml text>")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _validate(_read_yaml(path), str(source))
    raise SpecError(
        f"expected a path to a YAML file or a mapping, got {type(source).__name__}", source="<input>"
    )


def _read_yaml(path: Path) -> Any:
    name = str(path)
    try:
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a FIFO or a device would block or never end
            raise SpecError("not a regular file: expected a YAML architecture file", source=name)
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("file not found", source=name) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a YAML file", source=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror or exc}", source=name) from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"file larger than {MAX_BYTES // 2**20} MiB", source=name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not UTF-8 text (byte {exc.start}): expected a YAML architecture file", source=name
        ) from None
    if "\x00" in text:
        raise SpecError("contains NUL bytes: expected a YAML text file, not binary data", source=name)
    return parse_yaml(text, name)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document safely, bounding alias expansion."""
    import yaml

    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("the file is empty: expected a mapping with name, widths, layers",
                            source=source)
        if "&" in text:  # anchors: aliases may share nodes; bound the expansion, build the usual way
            _check_size(node, source)
            return loader.construct_document(node)
        return _construct(loader, node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        if not isinstance(exc, yaml.constructor.ConstructorError):
            what = f"YAML syntax error: {what}"
        raise SpecError([Problem("", what, line)], source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", source=source) from None
    except RecursionError:
        raise SpecError("YAML nested too deeply", source=source) from None
    finally:
        loader.dispose()


@functools.cache
def _loader_class() -> type:
    """PyYAML's safe loader (libyaml's parser when present), resolving each distinct scalar once.

    Resolving a plain scalar's tag (int? bool? null?) tries PyYAML's regular expressions, from
    Python, for every scalar in the file; a spec repeats the same few keys and values on every
    layer, so the answers are memoised per loader. Same tags, same values: resolution depends only
    on the scalar when no path resolvers are registered, and with any it is not memoised.
    """
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc, valid-type]
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._tags: dict[tuple[Any, ...], str] = {}

        def resolve(self, kind: type, value: Any, implicit: Any) -> str:
            if self.yaml_path_resolvers:
                return _decimal_only(super().resolve(kind, value, implicit), value)
            key = (kind, value, implicit)
            tag = self._tags.get(key)
            if tag is None:
                tag = self._tags[key] = _decimal_only(super().resolve(kind, value, implicit), value)
            return tag

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            _no_duplicates(self, node)
            return super().construct_mapping(node, deep=deep)

    Loader.add_constructor(_INT, _construct_int)
    Loader.add_constructor(_FLOAT, _construct_float)
    return Loader


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
#: Integers longer than this are refused before they are converted (a width has a few digits).
MAX_DIGITS = 30
_DECIMAL_INT = re.compile(r"[-+]?[0-9]+\Z")
_DECIMAL_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z")


def _decimal_only(tag: str, value: Any) -> str:
    """YAML 1.1 reads ``0x40``, ``0o100``, ``1_000`` and ``1:04`` (base 60) as 64, 64, 1000 and 64, and
    ``.inf`` as a number: a spec's numbers are plain decimals, anything else stays a string (and
    fails validation where a number is expected, naming the field)."""
    if tag == _INT and not _DECIMAL_INT.match(str(value)):
        return _STR
    if tag == _FLOAT and not _DECIMAL_FLOAT.match(str(value)):
        return _STR
    return tag


def _construct_int(loader: Any, node: Any) -> int:
    import yaml

    digits = node.value.lstrip("+-")
    if len(digits) > MAX_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(digits)} digits (at most {MAX_DIGITS})", node.start_mark)
    return int(node.value)


def _construct_float(loader: Any, node: Any) -> float:
    import math

    import yaml

    value = float(node.value)
    if not math.isfinite(value):
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value} is too large for a number", node.start_mark)
    return value


def _no_duplicates(loader: Any, node: Any) -> None:
    """A key given twice in one mapping is an error (YAML keeps the last, silently)."""
    import yaml

    seen: set[Any] = set()
    for key_node, _ in node.value:
        if type(key_node).__name__ != "ScalarNode":
            continue
        key = (key_node.tag, key_node.value)  # 'false' (a string) and false (a boolean) differ
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
        seen.add(key)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SPECIAL_KEYS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


def _construct(loader: Any, node: Any) -> Any:
    """The document's values, as ``loader.construct_document`` builds them, in about half the time.

    Plain mappings, sequences and strings (nearly all of a spec) are built here directly; every
    other node (numbers, booleans, null, explicit tags, merge keys, unhashable keys) goes to the
    loader's own constructor, which gives its values and its errors. Only for documents without
    anchors, so no node is shared and none contains itself.
    """
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    def build(node: Any) -> Any:
        kind = type(node)
        if kind is ScalarNode and node.tag == _STR:
            return node.value
        if kind is MappingNode and node.tag == _MAP:
            _no_duplicates(loader, node)
            out = {}
            for key_node, value_node in node.value:
                if key_node.tag in _SPECIAL_KEYS:
                    return loader.construct_object(node, deep=True)
                key = build(key_node)
                if not isinstance(key, Hashable):
                    return loader.construct_object(node, deep=True)  # raises PyYAML's error
                out[key] = build(value_node)
            return out
        if kind is SequenceNode and node.tag == _SEQ:
            return [build(child) for child in node.value]
        return loader.construct_object(node, deep=True)

    return build(node)


def _check_size(root: Any, source: str) -> None:
    """Expanded node count of the YAML graph, shared (aliased) nodes counted at every use."""
    from yaml.nodes import MappingNode, SequenceNode

    sizes: dict[int, int] = {}
    state: dict[int, int] = {}  # 1 = on the stack, 2 = done
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node, MappingNode, SequenceNode)
            total = 1 + sum(sizes[id(c)] for c in children)
            if total > MAX_NODES:
                line = node.start_mark.line + 1 if node.start_mark else None
                raise SpecError(
                    [Problem("", f"expands to more than {MAX_NODES} values (alias bomb?)", line)],
                    source=source,
                )
            sizes[key] = total
            state[key] = 2
            continue
        if state.get(key) == 2:
            continue
        if state.get(key) == 1:
            line = node.start_mark.line + 1 if node.start_mark else None
            raise SpecError([Problem("", "recursive alias: a node contains itself", line)],
                            source=source)
        state[key] = 1
        stack.append((node, True))
        for child in _children(node, MappingNode, SequenceNode):
            if state.get(id(child)) != 2:
                stack.append((child, False))


def _children(node: Any, mapping: type, sequence: type) -> list[Any]:
    if isinstance(node, mapping):
        return [item for pair in node.value for item in pair]
    if isinstance(node, sequence):
        return list(node.value)
    return []


def _validate(data: Any, source: str) -> Spec:
    from pydantic import ValidationError

    from paramcalc.spec.schema import SpecModel

    if not isinstance(data, dict):
        raise SpecError(
            f"expected a mapping with keys name, widths, layers at the top level, "
            f"got {_kind(data)}",
            source=source,
        )
    try:
        model = SpecModel.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_problems(exc, data), source=source) from None
    return build_spec(model, source)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def _problems(exc: Any, data: Any) -> list[Problem]:
    """Turn pydantic's errors into one line per field path, in the spec's own words."""
    from paramcalc.spec.schema import LAYER_MODELS

    problems: list[Problem] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = _strip_tags(err["loc"])
        kind = err["type"]
        path = format_path(loc)
        if kind == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            allowed = _allowed_keys(loc[:-1], data, LAYER_MODELS)
            msg = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, allowed, n=1)
            if close:
                msg += f" (did you mean {close[0]!r}?)"
            elif allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            msg = "missing required key"
        elif kind == "too_short":
            msg = "expected at least one entry, got none"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            msg = msg.replace("Input should be", "expected").replace("Input", "value")
            if "input" in err and kind not in ("layer_kind",) and "got" not in msg:
                msg += f", got {_short(err['input'])}"
        if kind == "layer_kind" and isinstance(err.get("input"), dict):
            k = err["input"].get("kind")
            msg = (f"unknown layer kind {_short(k)}; expected one of: {', '.join(LAYER_MODELS)}")
            path = format_path([*loc, "kind"])
        line = f"{path}: {msg}"
        if line not in seen:
            seen.add(line)
            problems.append(Problem(path, msg))
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _strip_tags(loc: tuple[Any, ...]) -> list[Any]:
    """Drop the union tags pydantic puts in locations: ``layers[0].linear.fan_in`` -> ``layers[0].fan_in``."""
    out: list[Any] = []
    i = 0
    while i < len(loc):
        out.append(loc[i])
        if loc[i] in ("layers", "widths") and i + 2 < len(loc) and isinstance(loc[i + 2], str):
            out.append(loc[i + 1])
            i += 3  # skip the tag after the index (layers) or the symbol (widths)
            continue
        i += 1
    return out


def _allowed_keys(loc: list[Any], data: Any, layer_models: Mapping[str, type]) -> list[str]:
    """The keys allowed in the mapping at ``loc``, for 'did you mean' hints."""
    from paramcalc.spec.schema import ScalingWidth, SpecModel

    model: Any = SpecModel
    node: Any = data
    i = 0
    try:
        while i < len(loc):
            part = loc[i]
            if part == "layers" and i + 1 < len(loc):
                node = node["layers"][loc[i + 1]]
                kind = node.get("kind", "repeat" if "repeat" in node else "linear")
                model = layer_models.get(kind)
                i += 2
            elif part == "widths" and i + 1 < len(loc):
                node, model = node["widths"][loc[i + 1]], ScalingWidth
                i += 2
            elif model is not None and part in model.model_fields:
                node = node[part]
                model = model.model_fields[part].annotation
                i += 1
            else:
                return []
    except (KeyError, IndexError, AttributeError, TypeError):
        return []
    fields = getattr(model, "model_fields", None)
    return list(fields) if fields else []
