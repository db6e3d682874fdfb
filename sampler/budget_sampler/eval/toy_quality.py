"""Measure the toy ladder on the 300-problem eval split and check its gates:
``python -m budget_sampler.eval.toy_quality [--weights DIR] [--out DIR]``.

It is `budget-sampler eval` on all 300 problems with 10 samples per problem at T = 0.8 (pure
temperature: top-p 1) plus the greedy sample, so the numbers come from the same engine, sandbox
and pass@k estimator as every other run (and the run directory resumes like theirs). Gates:
- greedy pass@1 strictly increases with size;
- the smallest model's T = 0.8 pass@1 is at least 3% (sampling it many times can pay);
- the largest model's greedy pass@1 is at least 0.30 and at most 0.85 (strong, not saturated).
Prints the README's quality table; exits 1 if a gate fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import InvalidInput
from ..toy.ladder import NAMES
from . import run
from .config import EvalConfig

PROBLEMS, N, TEMPERATURE = 300, 10, 0.8
GATES = ("greedy pass@1 increases with size", "smallest T=0.8 pass@1 >= 0.03",
         "largest greedy pass@1 in [0.30, 0.85]")


def gates(rows: dict[str, dict]) -> dict[str, bool]:
    greedy = [rows[name]["greedy"] for name in NAMES]
    return {GATES[0]: all(a < b for a, b in zip(greedy, greedy[1:])),
            GATES[1]: rows[NAMES[0]]["pass@1"] >= 0.03,
            GATES[2]: 0.30 <= greedy[-1] <= 0.85}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m budget_sampler.eval.toy_quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="a retrained ladder's folder (default: the shipped one)")
    ap.add_argument("--out", default="runs/toy-quality", help="run directory (default: runs/toy-quality)")
    args = ap.parse_args(argv)
    if args.weights:
        os.environ["BUDGET_SAMPLER_TOY_WEIGHTS"] = str(Path(args.weights).resolve())
    try:
        run.main(EvalConfig(limit=PROBLEMS, n_per_model=",".join([str(N)] * len(NAMES)), temperature=TEMPERATURE,
                            top_p=1.0, k=f"1,{N}", budget="flops", out=args.out))
    except InvalidInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models = json.loads((Path(args.out) / "report.json").read_text())["models"]
    rows = {name: {"greedy": models[name]["greedy_pass@1"], "pass@1": models[name]["pass@k"]["1"],
                   f"pass@{N}": models[name]["pass@k"][str(N)]} for name in NAMES}
    print(f"\n| name | greedy pass@1 | T={TEMPERATURE} pass@1 | T={TEMPERATURE} pass@{N} |\n"
          "| --- | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['greedy']:.3f} | {r['pass@1']:.3f} | {r[f'pass@{N}']:.3f} |")
    results = gates(rows)
    for gate, ok in results.items():
        print(f"{'PASS' if ok else 'FAIL'}  {gate}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
