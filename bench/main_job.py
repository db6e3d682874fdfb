"""The main job (`budget-sampler eval`, no arguments) at this checkout and at another one (e.g. `git worktree
add /tmp/base <commit>`), alternating fresh processes, each into a fresh run directory: the median wall
seconds of --repeats runs per side, and whether both reported the same pass@k and rank-score@k.

    python bench/main_job.py --base /tmp/base --repeats 3     # about 8 minutes on an idle 2-core machine
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

from checkout import import_paths, package

HERE = Path(__file__).resolve().parent


def run(root: Path, out: Path) -> tuple[float, dict]:
    """Wall seconds of the main job run from `root`'s own sampler package, and its pass@k / rank-score@k."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"{package(root)}.cli", "eval", "--out", str(out)], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(import_paths(root))}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    models = json.loads((out / "report.json").read_text())["models"]
    return seconds, {name: {k: v for k, v in m.items() if k.startswith(("pass@", "rank_score@"))}
                     for name, m in models.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other checkout (its repository root)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "main_job_cpu-2core.json"))
    args = ap.parse_args(argv)
    roots = {"base": Path(args.base).resolve(), "this": HERE.parent}
    revs = {k: subprocess.run(["git", "-C", str(r), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() for k, r in roots.items()}
    seconds, numbers = {k: [] for k in roots}, {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):
            for k in (roots if i % 2 == 0 else list(reversed(roots))):  # base, this, this, base, ...
                s, numbers[k] = run(roots[k], Path(d) / f"{k}{i}")
                seconds[k].append(round(s, 1))
                print(f"run {i}: {k} {s:.1f} s", flush=True)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = dict(benchmark="main_job", command=" ".join(["python bench/main_job.py", *(argv or sys.argv[1:])]),
                  machine=platform.node(), cpus=os.cpu_count(), threads="torch default", revisions=revs,
                  repeats=args.repeats, seconds=seconds, median_seconds=median,
                  this_over_base=round(median["this"] / median["base"], 3),
                  same_numbers=numbers["this"] == numbers["base"])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"median: base {median['base']:.1f} s, this {median['this']:.1f} s, ratio {result['this_over_base']:.3f}; "
          f"same pass@k and rank-score@k: {result['same_numbers']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
