"""Cold-start cost of `paramcalc derive --emit json`, as a ratio to `python -c "import sympy"`.

Goal (issue "Foundation and symbolic engine"): at most 1.5x on a transformer-sized spec (here the
12-block `examples/gpt.yaml`) and on a 1000-layer chain. Every figure is the median of several
cold processes measured in this one run, so the ratio does not depend on the machine's speed.
For context the script also measures the import floor: sympy plus the libraries the CLI cannot
start without (pydantic with one model, typer, PyYAML), which no work in paramcalc can go below.

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

FLOOR = """
import sympy, yaml, typer
from pydantic import BaseModel
class A(BaseModel):
    x: int
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


def median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="cold runs per figure (median)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        chain = Path(tmp) / "chain.yaml"
        chain.write_text(chain_spec())
        specs = {"examples/gpt.yaml (12 blocks, 196 tensors)": ROOT / "examples" / "gpt.yaml",
                 "chain (1000 layers, 1999 tensors)": chain}
        # Interleave measurements so that machine noise hits every figure alike.
        baseline = median_seconds([sys.executable, "-c", "import sympy"], args.repeat)
        floor = median_seconds([sys.executable, "-c", FLOOR], args.repeat)
        rows = []
        for label, path in specs.items():
            t = median_seconds([*cli(), "derive", str(path), "--emit", "json"], args.repeat)
            rows.append((label, t))
        baseline = min(baseline, median_seconds([sys.executable, "-c", "import sympy"], args.repeat))

    print(f"baseline  python -c 'import sympy'                    {baseline * 1000:7.1f} ms   1.00x")
    print(f"floor     sympy + pydantic + typer + yaml              {floor * 1000:7.1f} ms   "
          f"{floor / baseline:.2f}x")
    ok = True
    for label, t in rows:
        ratio = t / baseline
        ok &= ratio <= GOAL
        print(f"derive    {label:<44} {t * 1000:7.1f} ms   {ratio:.2f}x   "
              f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'}; "
              f"{(t - floor) * 1000:+.0f} ms over the floor)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
