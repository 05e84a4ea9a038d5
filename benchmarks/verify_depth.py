"""``paramcalc verify --depths`` across optimizers and depth exponents, with its time: what the table
"Verify across depth" in RESULTS.md records.

For each (parametrization, optimizer) and each ``alpha`` in 1 (CompleteP), 1/2 (depth-muP) and none
(no depth scaling), one depth sweep of examples/gpt_depth.yaml (d_model 64, depths 2..16 unless given,
the defaults of ``verify --depths``): pass or fail, the failing checks, the slope of each block's own
change and of the stream's change after step 1, and the seconds the sweep took. The figure of the first
case is written to ``--plot``.

The verdict is the verifier's, evidence bar included (``inconclusive``: passing on too little
evidence, paramcalc.verify.evidence).

    python benchmarks/verify_depth.py [--depths 2,4,8,16] [--seeds 6] [--cases mup:adam,mup:sgd]
                                      [--alphas 1,0.5,none] [--plot benchmarks/depth_gpt.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from paramcalc.verify.depth import DEFAULT_SEEDS, verify_depth
from paramcalc.verify.depth_present import plot_depth

CASES = (("mup", "adam"), ("mup", "adamw"), ("mup", "sgd"), ("mup", "lion"), ("mup", "muon"),
         ("spectral", "adam"), ("spectral", "sgd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="2,4,8,16")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--cases", default=",".join(f"{p}:{o}" for p, o in CASES))
    parser.add_argument("--alphas", default="1,0.5,none")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    depths = [int(v) for v in args.depths.split(",")]
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    alphas = [a if a == "none" else float(a) for a in args.alphas.split(",")]
    print("| parametrization | optimizer | alpha | verdict | block change (first, step 1) | "
          "stream change (step 1) | failing checks | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (param, optimizer) in enumerate(cases):
        for alpha in alphas:
            start = time.perf_counter()
            report = verify_depth("examples/gpt_depth.yaml", param, optimizer, depths=depths,
                                  options={"depth_alpha": alpha, "seeds": args.seeds})
            seconds = time.perf_counter() - start
            by = {(c.quantity, c.subject, c.step): c for c in report.checks}
            block = by[("block_change", "blocks[first]", 1)].slope
            stream = by[("dstream", "the stream", 1)].slope
            failing = "; ".join(f"{c.quantity} {c.subject} step {c.step}: {c.slope.value:+.2f}"
                                for c in report.failures[:3]) + (" ..." if len(report.failures) > 3 else "")
            verdict = "pass" if report.passed else "FAIL" if report.failures else "inconclusive"
            print(f"| {param} | {optimizer} | {report.alpha_text} | {verdict} | "
                  f"{block.value:+.2f} +- {block.stderr:.2f} | {stream.value:+.2f} +- {stream.stderr:.2f} | "
                  f"{failing or '-'} | {seconds:.1f} |", flush=True)
            if args.plot is not None and i == 0 and alpha == 1:
                plot_depth(report, args.plot)


if __name__ == "__main__":
    main()
