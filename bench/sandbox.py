"""Test runs per second of the sandbox, namespaces mode vs process mode, on the default eval's toy
problems (their reference solutions, each run a distinct program so that nothing is cached).

The modes alternate in one process, `--repeats` times each, and the median rate of each is kept,
so that load from elsewhere on the machine hits both alike; each worker count in `--workers` is
measured so (the default run's is the CPU count). Writes bench/results/sandbox_<machine>.json and
prints a line per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from sampler.eval.config import DEFAULT_PROBLEMS
from sampler.eval.execute import ExecutionPool
from sampler.eval.tasks import load_benchmark

MODES = ("process", "namespaces")


def rate(mode: str, programs: list[tuple[dict, str]], workers: int) -> float:
    """Test runs per second of one pool running all `programs` (every one must pass)."""
    start = time.perf_counter()
    with ExecutionPool(workers=workers, sandbox=mode) as pool:
        futures = [pool.submit(problem, completion) for problem, completion in programs]
        results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    failed = [r["result"] for r in results if not r["passed"]]
    if failed:
        raise SystemExit(f"{mode}: {len(failed)} reference solutions failed, e.g. {failed[0]}")
    return len(programs) / seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=240, help="test runs per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per mode, alternating")
    ap.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1],
                    help="test runs in parallel: one measurement series per count")
    ap.add_argument("--machine", default=f"cpu-{os.cpu_count()}core", help="name in the JSON file's name")
    args = ap.parse_args(argv)
    problems = load_benchmark("toy", DEFAULT_PROBLEMS).problems
    programs = [(p, p["canonical_solution"] + f"\n# run {i}\n")
                for i, p in ((i, problems[i % len(problems)]) for i in range(args.runs))]
    series = []
    for workers in args.workers:
        rates = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode in MODES:
                rates[mode].append(round(rate(mode, programs, workers), 1))
                print(f"workers {workers}  {mode:10s} repeat {repeat}: {rates[mode][-1]:6.1f} runs/s", flush=True)
        median = {mode: statistics.median(r) for mode, r in rates.items()}
        ratio = round(median["namespaces"] / median["process"], 3)
        print(f"workers {workers}  median: process {median['process']:.1f} runs/s, "
              f"namespaces {median['namespaces']:.1f} runs/s, ratio {ratio:.2f}")
        series.append(dict(workers=workers, runs_per_second=rates, median_runs_per_second=median,
                           namespaces_over_process=ratio))
    result = dict(benchmark="sandbox", command=" ".join(["python bench/sandbox.py", *(sys.argv[1:] if argv is None
                                                                                      else argv)]),
                  machine=platform.node(), processor=platform.processor() or platform.machine(),
                  cpus=os.cpu_count(), kernel=platform.release(), python=platform.python_version(),
                  runs=args.runs, repeats=args.repeats, results=series)
    out = Path(__file__).parent / "results" / f"sandbox_{args.machine}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
