"""Cold-start cost of `paramcalc derive --emit json`, as a ratio to `python -c "import sympy"`.

Goal (issue "Foundation and symbolic engine"): at most 1.5x on a transformer-sized spec (here the
12-block `examples/gpt.yaml`, 196 tensors) and on a 1000-layer chain (with biases: 1999 tensors).
Every figure is the median of cold processes measured in this one run, in interleaved rounds (each
round runs every command once), so the ratio does not depend on the machine's speed or its drift.
For context the script also measures the libraries alone: sympy plus what the CLI cannot start
without (pydantic with one model, typer, PyYAML), imported the way `paramcalc.cli.main` imports
(collector paused, then frozen).

paramcalc's own modules are byte-compiled first, as any installed package is (pip compiles on
install; an editable install writes `__pycache__` on first import). Without that, a machine with
PYTHONDONTWRITEBYTECODE set would compile our sources from scratch in every run, a cost no user pays
and that `import sympy` (compiled at install) does not pay either.

    python benchmarks/derive_speed.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.5

LIBRARIES = """
import gc
gc.disable()
import sympy, yaml, typer
from pydantic import BaseModel
class A(BaseModel):
    x: int
gc.freeze()
"""


def chain_spec(n: int = 1000) -> str:
    lines = ["name: chain", "widths: {n_in: 784, d: {base: 128}, n_out: 10}", "layers:",
             "  - {name: l0, fan_in: n_in, fan_out: d, bias: true}"]
    lines += [f"  - {{name: l{i}, fan_in: d, fan_out: d, bias: true}}" for i in range(1, n - 1)]
    lines.append(f"  - {{name: l{n - 1}, fan_in: d, fan_out: n_out}}")
    return "\n".join(lines) + "\n"


def cli() -> list[str]:
    script = Path(sys.executable).with_name("paramcalc")
    if script.exists():
        return [str(script)]
    found = shutil.which("paramcalc")
    return [found] if found else [sys.executable, "-m", "paramcalc"]


def cold_runs(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Median wall time of each command, run in ``repeat`` interleaved rounds."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def byte_compile() -> None:
    import paramcalc

    package = Path(paramcalc.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds (median)")
    args = parser.parse_args()

    byte_compile()
    with tempfile.TemporaryDirectory() as tmp:
        chain = Path(tmp) / "chain.yaml"
        chain.write_text(chain_spec())
        specs = {"examples/gpt.yaml (12 blocks, 196 tensors)": ROOT / "examples" / "gpt.yaml",
                 "chain (1000 layers, 1999 tensors)": chain}
        commands = {"baseline": [sys.executable, "-c", "import sympy"],
                    "libraries": [sys.executable, "-c", LIBRARIES]}
        commands |= {label: [*cli(), "derive", str(path), "--emit", "json"] for label, path in specs.items()}
        for cmd in commands.values():  # warm the file cache; check every command works
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        medians = cold_runs(commands, args.repeat)

    baseline = medians["baseline"]
    libraries = medians["libraries"]
    print(f"baseline  python -c 'import sympy'                    {baseline * 1000:7.1f} ms   1.00x")
    print(f"libraries sympy + pydantic + typer + yaml              {libraries * 1000:7.1f} ms   "
          f"{libraries / baseline:.2f}x")
    ok = True
    for label in specs:
        t = medians[label]
        ratio = t / baseline
        ok &= ratio <= GOAL
        print(f"derive    {label:<44} {t * 1000:7.1f} ms   {ratio:.2f}x   "
              f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'}; "
              f"{(t - libraries) * 1000:+.0f} ms over the libraries)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
