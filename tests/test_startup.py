"""Start-up: `import paramcalc` is light, the public names load on use, and only a process the
command line owns has its garbage collector paused and frozen (see `paramcalc.cli.main`)."""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys

from typer.testing import CliRunner

import paramcalc
from paramcalc.cli import app
from tests.conftest import EXAMPLES, ROOT

MLP = str(EXAMPLES / "mlp.yaml")


def python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_is_light_and_names_load_on_use():
    out = python(
        "import sys, paramcalc\n"
        "light = not any(m in sys.modules for m in ('sympy', 'pydantic', 'yaml'))\n"
        "from paramcalc import derive\n"
        "d = paramcalc.derive(paramcalc.load_spec('examples/mlp.yaml'), 'mup', 'adam')\n"
        "print(light, derive is paramcalc.derive, type(d).__name__, 'sympy' in sys.modules)\n"
    )
    assert out.split() == ["True", "True", "Derivation", "True"]


def test_public_names():
    assert set(paramcalc.__all__) <= set(dir(paramcalc))
    for name in paramcalc.__all__:
        assert getattr(paramcalc, name) is not None
    # The engine's package is paramcalc.engine, so importing its modules never rebinds the function.
    engine = importlib.import_module("paramcalc.engine")
    importlib.import_module("paramcalc.engine.rules.spectral")
    assert callable(paramcalc.derive) and paramcalc.derive is engine.derive
    try:
        paramcalc.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_help_needs_no_engine():
    out = python(
        "import sys\n"
        "from paramcalc.cli import main\n"
        "sys.argv = ['paramcalc', 'derive', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'sympy' in sys.modules)\n"
    )
    assert out.splitlines()[-1] == "0 False"


# A process started by main(): the collector is paused, start-up imports frozen; `derive` ends
# with it paused, `verify` (long) resumes it. Printed after the command returns.
_STATE = (
    "import gc, sys\n"
    "from paramcalc import cli\n"
    "sys.argv = ['paramcalc', *{args!r}]\n"
    "code = None\n"
    "try:\n"
    "    cli.main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps([code, gc.isenabled(), gc.get_freeze_count()]))\n"
)


def _state(*args: str) -> list:
    out = python("import json\n" + _STATE.format(args=list(args)))
    return json.loads(out.splitlines()[-1])


def test_derive_process_keeps_collector_paused_after_freezing():
    code, enabled, frozen = _state("derive", MLP, "--emit", "json")
    assert code in (0, None) and not enabled and frozen > 100_000


def test_verify_process_resumes_collector():
    """verify trains for minutes: after loading the spec (which freezes the start-up imports) it
    runs with the collector on. A --model that does not exist stops it right after, with exit 2."""
    code, enabled, frozen = _state("verify", MLP, "--model", "no_such_module_xyz:make", "--widths", "8,16")
    assert code == 2 and enabled and frozen > 100_000


def test_in_process_cli_leaves_collector_alone():
    before = gc.get_freeze_count()
    assert gc.isenabled()
    result = CliRunner().invoke(app, ["derive", MLP, "--emit", "json"])
    assert result.exit_code == 0, result.output
    assert gc.isenabled() and gc.get_freeze_count() == before


def test_process_output_matches_in_process():
    """The owned process (collector paused) prints what the in-process CLI prints."""
    proc = subprocess.run([sys.executable, "-m", "paramcalc", "derive", MLP, "--emit", "json",
                           "--param", "mup"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = CliRunner().invoke(app, ["derive", MLP, "--emit", "json", "--param", "mup"])
    assert proc.stdout == result.stdout
