"""Test runs per second of the sandbox, namespaces mode vs process mode, on the default eval's toy
problems (their reference solutions, each run a distinct program so that nothing is cached).

The modes alternate in one process, `--repeats` times each, and the median rate of each is kept,
so that load from elsewhere on the machine hits both alike; each worker count in `--workers` is
measured so (the default run's is the CPU count). Writes bench/results/sandbox_<machine>.json and
prints a line per measurement.

With --fork-bomb, instead: how late this process, standing for the evaluator, wakes from 10 ms
sleeps and how long a small computation takes in it, first idle, then while fork bombs run in the
namespaces mode (the first of --workers at a time, each until its timeout); writes
bench/results/sandbox_forkbomb_<machine>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

from budget_sampler.eval import jail
from budget_sampler.eval.config import DEFAULT_PROBLEMS
from budget_sampler.eval.execute import ExecutionPool
from budget_sampler.eval.tasks import load_benchmark

MODES = ("process", "namespaces")
BOMB = "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.prctl(15, b'forkbomb', 0, 0, 0)\nwhile True:\n    libc.fork()\n"


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


def responsiveness(work) -> dict:
    """While `work()` runs: how late 10 ms sleeps wake up, and how long summing 100,000 numbers takes
    (ms; median, 99th percentile, maximum)."""
    late, compute, stop = [], [], threading.Event()

    def measure():
        while not stop.is_set():
            start = time.perf_counter()
            time.sleep(0.01)
            late.append((time.perf_counter() - start) * 1000 - 10)
            start = time.perf_counter()
            sum(range(100_000))
            compute.append((time.perf_counter() - start) * 1000)

    thread = threading.Thread(target=measure)
    thread.start()
    try:
        work()
    finally:
        stop.set()
        thread.join()
    return {name: dict(p50=round(statistics.median(ms), 2), p99=round(statistics.quantiles(ms, n=100)[98], 2),
                       max=round(max(ms), 2), samples=len(ms))
            for name, ms in (("sleep_late_ms", late), ("compute_ms", compute))}


def fork_bomb(workers: int, bombs: int, timeout: float) -> dict:
    """The evaluator's responsiveness idle, then while `bombs` fork bombs run, `workers` at a time."""
    def run_bombs():
        problem = {"prompt": "", "entry_point": None, "test": ""}
        with ExecutionPool(workers=workers, timeout=timeout, sandbox="namespaces") as pool:
            results = [f.result() for f in [pool.submit(problem, BOMB + f"# run {i}\n") for i in range(bombs)]]
        if any(r["result"] != "timed out" for r in results):
            raise SystemExit(f"a fork bomb did not time out: {results}")

    idle = responsiveness(lambda: time.sleep(bombs / workers * timeout))
    start = time.perf_counter()
    bombed = responsiveness(run_bombs)
    seconds = time.perf_counter() - start
    time.sleep(1)
    left = sum(1 for stat in Path("/proc").glob("[0-9]*/stat") if _comm(stat) == "forkbomb")
    added = {name: {q: round(bombed[name][q] - idle[name][q], 2) for q in ("p50", "p99", "max")} for name in idle}
    for name in idle:
        print(f"{name}: idle {idle[name]}, fork bombs {bombed[name]}, added {added[name]}")
    print(f"{bombs} fork bombs, {workers} at a time, {timeout} s each: {seconds:.1f} s, {left} processes left")
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")  # on: each run's session shares one CPU share
    return dict(workers=workers, bombs=bombs, timeout=timeout, processes_per_run=jail.PROCESSES,
                evaluator_uid=os.getuid(), sched_autogroup=autogroup.exists() and autogroup.read_text().strip() == "1",
                bombs_seconds=round(seconds, 2), processes_left=left, idle=idle,
                fork_bombs=bombed, added=added)


def _comm(stat: Path) -> str:
    try:
        return stat.read_text().split(" (", 1)[1].rsplit(") ", 1)[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=240, help="test runs per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per mode, alternating")
    ap.add_argument("--workers", type=int, nargs="+", default=[os.cpu_count() or 1],
                    help="test runs in parallel: one measurement series per count")
    ap.add_argument("--machine", default=f"cpu-{os.cpu_count()}core", help="name in the JSON file's name")
    ap.add_argument("--fork-bomb", action="store_true", help="the evaluator's latency while fork bombs run")
    ap.add_argument("--bombs", type=int, default=4, help="fork bombs to run, with --fork-bomb")
    ap.add_argument("--timeout", type=float, default=3.0, help="each fork bomb's timeout (s), with --fork-bomb")
    args = ap.parse_args(argv)
    environment = dict(command=" ".join(["python bench/sandbox.py", *(sys.argv[1:] if argv is None else argv)]),
                       machine=platform.node(), processor=platform.processor() or platform.machine(),
                       cpus=os.cpu_count(), kernel=platform.release(), python=platform.python_version())
    if args.fork_bomb:
        result = dict(benchmark="sandbox_forkbomb", **environment,
                      **fork_bomb(args.workers[0], args.bombs, args.timeout))
        out = Path(__file__).parent / "results" / f"sandbox_forkbomb_{args.machine}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return 0
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
    result = dict(benchmark="sandbox", **environment, runs=args.runs, repeats=args.repeats, results=series)
    out = Path(__file__).parent / "results" / f"sandbox_{args.machine}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
