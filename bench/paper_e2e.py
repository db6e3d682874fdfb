"""End to end under the paper's sampling on CPU: tokens/s against n / step time, and the host's share.

HumanEval prompts, HumanEval's stop strings, T = 0.8, top-p 0.95, max_new_tokens 512, n samples of
each of --prompts prompts with slots refilled across prompts; every step computed for real on a
random-weight model, the sampled tokens replaced by real code (bench/e2e.py's run_paper), so samples
stop at realistic lengths through the real text path. The step time is the engine's step alone at
batch n and the run's mean suffix length (sampler.profiling.measure, no stop strings), in the
same process: tokens/s / (n / step)
is the share of the ideal the whole loop reaches (issue 21's bar: >= 0.9). Each figure is the
median of --repeats runs. Writes bench/results/paper_e2e_<machine>.json.

    python bench/paper_e2e.py --n 64 256 --prompts 16 --repeats 3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from e2e import forced_scripts, paper_step_ms, run_paper
from throughput import SHAPES, make_model

from budget_sampler import Sampler


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/paper_e2e_cpu-2core.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        make_model(Path(d), SHAPES["gqa"]["config"])
        for n in args.n:
            sampler = Sampler.from_pretrained(d, max_batch_size=n)
            scripts = forced_scripts(sampler, n, args.prompts)
            runs = [run_paper(sampler, scripts, n) for _ in range(args.repeats)]
            step_ms = paper_step_ms(sampler, scripts, runs[0], repeats=5)
            tok_s = statistics.median(r["tokens_per_s"] for r in runs)
            row = dict(n=n, tokens_per_s=tok_s, step_ms=step_ms, ideal_tokens_per_s=n / step_ms * 1e3,
                       share_of_ideal=tok_s / (n / step_ms * 1e3),
                       host_share=statistics.median(r["host_share"] for r in runs),
                       mean_batch=statistics.median(r["mean_batch"] for r in runs), runs=runs)
            rows.append(row)
            print(f"n={n}: {tok_s:,.0f} tok/s, step {step_ms:.2f} ms (ideal {row['ideal_tokens_per_s']:,.0f} "
                  f"tok/s): {row['share_of_ideal']:.2f} of it; mean batch {row['mean_batch']:.1f}; "
                  f"host postprocess {row['host_share']:.1%} of the time", flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / "paper_e2e_cpu-2core.json")
    out.write_text(json.dumps(dict(benchmark="paper_e2e", command="python " + " ".join(sys.argv),
                                   machine=platform.node(), threads=args.threads, torch=torch.__version__,
                                   shape=SHAPES["gqa"]["config"], rows=rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
