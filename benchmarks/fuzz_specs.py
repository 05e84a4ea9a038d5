"""Fuzz the spec loader, the engine and the emitters with N generated specs (default 10,000).

Each spec (tests/fuzz_specs.py: plausible ones mutated, and hostile ones) must be accepted, and then
derive and emit, or be rejected with one UserError. Prints the counts, the time, and the first spec
that breaks the contract with its traceback (exit 1).

    python benchmarks/fuzz_specs.py [--count 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz_specs import OPTIMIZERS, PARAMETRIZATIONS, check_spec, specs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    broken: list[tuple[dict, str]] = []

    @seed(args.seed)
    @settings(max_examples=args.count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        spec=specs(), parametrization=st.sampled_from(PARAMETRIZATIONS), optimizer=st.sampled_from(OPTIMIZERS)
    )
    def run(spec, parametrization, optimizer):
        if broken:
            return
        try:
            counts[check_spec(spec, parametrization, optimizer)] += 1
        except Exception:  # noqa: BLE001 - the finding
            broken.append((spec, f"{parametrization} x {optimizer}\n{traceback.format_exc()}"))

    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"{sum(counts.values())} specs in {seconds:.1f} s: {dict(counts)}")
    if broken:
        spec, trace = broken[0]
        print(f"BROKEN: {spec!r}\n{trace}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
