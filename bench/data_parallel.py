"""`budget-sampler eval` in one process vs `--data-parallel 2` (two Ray actors on a local cluster),
by default on the main job (the shipped toy ladder on 60 toy problems, n=32), fresh run
directories, configurations alternating (ABC, CBA, ...), medians of --repeats runs. Also checks
that every configuration drew the same samples.

Measured per run: the whole command's wall seconds (start-up, Ray, model loads, draws, test
execution, report), and the draws' wall seconds (engine.jsonl `wall_seconds` summed over the
models: from loading the model, actors started included, to the last sample) with the generated
tokens over them. Threads: one process uses torch's default (all cores), or 1 with
OMP_NUM_THREADS=1; each Ray actor gets OMP_NUM_THREADS=1 from Ray (num_cpus=1), so 2 actors use
2 threads in all.

    python bench/data_parallel.py --repeats 3    # about 15 minutes on an idle 2-core machine
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {  # name -> (extra eval arguments, extra environment)
    "one_process": ([], {}),
    "one_process_1_thread": ([], {"OMP_NUM_THREADS": "1"}),
    "data_parallel_2": (["--data-parallel", "2"], {}),
}


def run(out: Path, slice_args: list[str], extra: list[str], env: dict) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "budget_sampler.cli", "eval", *slice_args, "--out", str(out), *extra],
                   check=True, cwd=HERE.parent, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    engine = [json.loads(line) for path in sorted(out.glob("*/engine.jsonl")) for line in path.read_text().splitlines()]
    draw = sum(e["wall_seconds"] for e in engine)
    tokens = sum(e["generated_tokens"] for e in engine)
    samples = sorted((path.parent.name, path.stem, row["task_id"], row["index"], row["completion"])
                     for stem in ("samples", "greedy") for path in out.glob(f"*/{stem}.jsonl")
                     for row in map(json.loads, path.read_text().splitlines()))
    return {"command_seconds": round(seconds, 2), "draw_seconds": round(draw, 2), "generated_tokens": tokens,
            "draw_tokens_per_s": round(tokens / draw, 1), "load_average_before": round(load, 2), "_samples": samples}


def threads(env: dict) -> int:
    return int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], check=True,
                              capture_output=True, text=True, env={**os.environ, **env}).stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="eval's --models (default: its default, the shipped toy ladder)")
    ap.add_argument("--limit", type=int, help="eval's --limit (default: its default)")
    ap.add_argument("--n", type=int, help="eval's --n (default: its default)")
    ap.add_argument("--max-new-tokens", type=int, help="eval's --max-new-tokens (default: its default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--out", default=str(HERE / "results" / "data_parallel_cpu-2core.json"))
    args = ap.parse_args(argv)
    slice_args = [a for flag, value in (("--models", args.models), ("--limit", args.limit), ("--n", args.n),
                                        ("--max-new-tokens", args.max_new_tokens)) if value is not None
                  for a in (flag, str(value))]
    runs = {name: [] for name in args.configs}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            for name in (args.configs if r % 2 == 0 else args.configs[::-1]):
                extra, env = CONFIGS[name]
                runs[name].append(run(Path(d) / f"{name}-{r}", slice_args, extra, env))
                last = runs[name][-1]
                print(f"{name:22s} run {r}: {last['command_seconds']:7.1f} s command, {last['draw_seconds']:7.1f} s "
                      f"drawing, {last['draw_tokens_per_s']:8,.0f} tok/s (load average before "
                      f"{last['load_average_before']})", flush=True)
    drawn = [r.pop("_samples") for v in runs.values() for r in v]
    if any(samples != drawn[0] for samples in drawn):
        raise SystemExit("the configurations drew different samples")
    results = {}
    for name, v in runs.items():
        results[name] = {key: round(statistics.median(r[key] for r in v), 2)
                         for key in ("command_seconds", "draw_seconds", "draw_tokens_per_s")}
        results[name]["runs"] = v
    base = results.get("one_process")
    if base is not None:
        for name, r in results.items():
            r["draw_speedup_vs_one_process"] = round(base["draw_seconds"] / r["draw_seconds"], 2)
            r["command_speedup_vs_one_process"] = round(base["command_seconds"] / r["command_seconds"], 2)
    import ray
    import torch
    command = " ".join(["python bench/data_parallel.py", *(argv or sys.argv[1:])])
    result = dict(benchmark="data_parallel", command=command, machine=platform.node(), cpus=os.cpu_count(),
                  eval_arguments=slice_args, repeats=args.repeats,
                  threads={"one_process": threads({}), "one_process_1_thread": threads({"OMP_NUM_THREADS": "1"}),
                           "data_parallel_2": "1 per actor (Ray sets OMP_NUM_THREADS=1 for a num_cpus=1 actor)"},
                  versions={"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
                  results=results)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({name: {k: v for k, v in r.items() if k != "runs"} for name, r in results.items()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
