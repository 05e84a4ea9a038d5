"""The size rules of docs/architecture.md, checked on the package's own source.

Every function in ``paramcalc/`` fits on a screen (at most 60 lines) and takes at most 8 parameters
(the typer command signatures in ``paramcalc/cli*.py`` aside: each option is a parameter there);
every module stays under 400 lines. A new module or function that breaks one of them fails here,
naming it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "paramcalc"
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len([n for n in names if n.arg not in ("self", "cls")])


def _is_command(path: Path, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return path.name.startswith("cli") and any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
        for d in fn.decorator_list
    )


def test_the_scan_sees_the_package():
    assert len(_modules()) > 30
    assert sum(len(_functions(p)) for p in _modules()) > 300


def test_modules_stay_under_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_fit_on_a_screen():
    long = {}
    for path in _modules():
        for fn in _functions(path):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES and not _is_command(path, fn):
                long[f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_functions_take_few_parameters():
    many = {}
    for path in _modules():
        for fn in _functions(path):
            if _parameters(fn) > MAX_PARAMETERS and not _is_command(path, fn):
                many[f"{path.relative_to(PACKAGE)}:{fn.lineno} {fn.name}"] = _parameters(fn)
    assert not many, f"functions with more than {MAX_PARAMETERS} parameters: {many}"
