"""Cold-start cost of `paramcalc infer` on Hugging Face GPT-2, as a ratio to a cold `paramcalc derive`.

Goal: inferring the spec of a real model costs less than 2x deriving a hand-written one, so that
`--model` in place of a YAML file is no burden. Measured here, as cold processes (each command a
fresh interpreter, as a user runs it):

- infer: `paramcalc infer examples.hf_models:gpt2` at GPT-2 small's widths (d_model 768, 12 heads,
  vocab 50257, ctx 1024, 12 layers; d_model and n_heads scale), written to a temporary file. The
  factory builds `GPT2LMHeadModel` on the meta device (no memory, no download) at the base widths and
  with each scaling width doubled; the cost includes importing torch and transformers.
- imports (the floor): `python -c "import torch; from transformers import GPT2LMHeadModel"` (with
  the garbage collector paused, as paramcalc's entry point runs), what
  any script that builds this model pays before paramcalc does anything; `infer - imports` is
  paramcalc's own cost on top of the model's libraries.
- derive (the baseline): `paramcalc derive examples/gpt.yaml` (the hand-written 12-block GPT, 196
  tensors) with its default emit (the table), written to a temporary file.

Every figure is the median of cold processes measured in this one run, in interleaved rounds (each
round runs both commands once), so the ratio does not depend on the machine's speed or its drift.
Each command is run once first, untimed, to warm the file cache and check that it works (the
inferred YAML must be non-empty); a failing command prints its stderr and the script exits 1.
Otherwise it exits 0 whether the target is met or not: it is a benchmark, not a test.

paramcalc's own modules are byte-compiled first, as any installed package is (see derive_speed.py).

    python benchmarks/infer_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from derive_speed import byte_compile, cli  # the same CLI and byte-compiled package as derive's benchmark

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0

WIDTHS = "d_model=768,n_heads=12,vocab=50257,ctx=1024,n_layers=12"
SCALE = "d_model,n_heads"


def run(cmd: list[str]) -> float:
    """Wall time of one cold run of ``cmd`` (from the repository root); on failure, its stderr and exit 1."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(f"command failed (exit {done.returncode}): {' '.join(cmd)}", file=sys.stderr)
        print(done.stderr, file=sys.stderr, end="")
        sys.exit(1)
    return elapsed


def cold_runs(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median wall time of each command, run in ``repeats`` interleaved rounds."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeats):
        for label, cmd in commands.items():
            times[label].append(run(cmd))
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args()

    help_check = subprocess.run([sys.executable, "-m", "paramcalc", "--help"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if help_check.returncode != 0:
        print("python -m paramcalc --help failed:", file=sys.stderr)
        print(help_check.stderr, file=sys.stderr, end="")
        return 1

    byte_compile()
    with tempfile.TemporaryDirectory() as tmp:
        inferred = Path(tmp) / "gpt2.yaml"
        table = Path(tmp) / "gpt.txt"
        commands = {
            "infer": [*cli(), "infer", "examples.hf_models:gpt2", "--widths", WIDTHS, "--scale", SCALE,
                      "-o", str(inferred)],
            "derive": [*cli(), "derive", str(ROOT / "examples" / "gpt.yaml"), "-o", str(table)],
            # with the collector paused, as paramcalc's entry point runs (paramcalc.cli.main)
            "imports": [sys.executable, "-c", "import gc; gc.disable(); import torch; "
                        "from transformers import GPT2LMHeadModel"],
        }
        for cmd in commands.values():  # warm the file cache; check every command works
            run(cmd)
        text = inferred.read_text() if inferred.exists() else ""
        if not text.strip() or "layers:" not in text:
            print(f"paramcalc infer wrote no spec ({len(text)} characters) to {inferred}", file=sys.stderr)
            return 1
        n_layers = sum(1 for line in text.splitlines() if line.startswith("- "))
        medians = cold_runs(commands, args.repeats)

    derive, infer = medians["derive"], medians["infer"]
    ratio = infer / derive
    infer_label = f"examples.hf_models:gpt2, d_model 768 ({n_layers} spec entries)"
    derive_label = "examples/gpt.yaml (default emit: table)"
    print(f"derive  {derive_label:<52} {derive * 1000:7.1f} ms   1.00x")
    print(f"infer   {infer_label:<52} {infer * 1000:7.1f} ms   {ratio:.2f}x")
    floor = medians["imports"]
    own = infer - floor
    print(f"imports {'import torch; from transformers import GPT2LMHeadModel':<52} {floor * 1000:7.1f} ms   "
          f"{floor / derive:.2f}x")
    print(f"infer - imports (paramcalc's own cost){'':<22} {own * 1000:7.1f} ms   {own / derive:.2f}x")
    print(f"ratio infer/derive {ratio:.2f} (target < {TARGET:g}: {'met' if ratio < TARGET else 'MISSED'}); "
          f"the imports alone are {floor / derive:.2f}x; medians of {args.repeats} interleaved cold runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
