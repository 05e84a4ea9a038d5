"""``paramcalc verify --depths`` across optimizers and depth exponents, with its time: what the table
"Verify across depth" in RESULTS.md records.

For each (parametrization, optimizer) and each ``alpha`` in 1 (CompleteP), 1/2 (depth-muP) and none
(no depth scaling), one depth sweep of examples/gpt_depth.yaml (d_model 64, depths 2..16 unless given,
the defaults of ``verify --depths``): pass or fail, the failing checks, the slope of each block's own
change and of the stream's change after step 1, and the seconds the sweep took. The figure of the first
case is written to ``--plot``.

    python benchmarks/verify_depth.py [--depths 2,4,8,16] [--seeds 3] [--plot benchmarks/depth_gpt.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from paramcalc.verify.depth import verify_depth
from paramcalc.verify.depth_present import plot_depth

CASES = (("mup", "adam"), ("mup", "adamw"), ("mup", "sgd"), ("mup", "lion"), ("mup", "muon"),
         ("spectral", "adam"), ("spectral", "sgd"))
ALPHAS = (1, 0.5, "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="2,4,8,16")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    depths = [int(v) for v in args.depths.split(",")]
    print("| parametrization | optimizer | alpha | verdict | block change (first, step 1) | "
          "stream change (step 1) | failing checks | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (param, optimizer) in enumerate(CASES):
        for alpha in ALPHAS:
            start = time.perf_counter()
            report = verify_depth("examples/gpt_depth.yaml", param, optimizer, depths=depths,
                                  options={"depth_alpha": alpha, "seeds": args.seeds})
            seconds = time.perf_counter() - start
            by = {(c.quantity, c.subject, c.step): c for c in report.checks}
            block = by[("block_change", "blocks[first]", 1)].slope
            stream = by[("dstream", "the stream", 1)].slope
            failing = "; ".join(f"{c.quantity} {c.subject} step {c.step}: {c.slope.value:+.2f}"
                                for c in report.failures[:3]) + (" ..." if len(report.failures) > 3 else "")
            print(f"| {param} | {optimizer} | {report.alpha_text} | {'pass' if report.passed else 'FAIL'} | "
                  f"{block.value:+.2f} +- {block.stderr:.2f} | {stream.value:+.2f} +- {stream.stderr:.2f} | "
                  f"{failing or '-'} | {seconds:.1f} |", flush=True)
            if args.plot is not None and i == 0 and alpha == 1:
                plot_depth(report, args.plot)


if __name__ == "__main__":
    main()
