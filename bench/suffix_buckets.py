"""The CPU suffix-attention reference with rows in length buckets vs padded to the batch's longest,
on the paper's sampling end to end (bench/e2e.py's run_paper, n = 256 over --prompts HumanEval
prompts: refilled slots mix suffix lengths), alternating in one process, median of --repeats.

    python bench/suffix_buckets.py --prompts 8 --repeats 3 --threads 2
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
from e2e import forced_scripts, run_paper
from throughput import SHAPES, make_model

import budget_sampler_kernels.attention as attention_module
from budget_sampler import Sampler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "suffix_buckets_cpu-2core.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bucket_rows = attention_module.SUFFIX_BUCKET_ROWS
    runs = {"one padding": [], "buckets": []}
    with tempfile.TemporaryDirectory() as d:
        make_model(Path(d), SHAPES["gqa"]["config"])
        sampler = Sampler.from_pretrained(d, max_batch_size=args.n)
        scripts = forced_scripts(sampler, args.n, args.prompts)
        for _ in range(args.repeats):
            for side, rows in (("one padding", 1 << 30), ("buckets", bucket_rows)):
                attention_module.SUFFIX_BUCKET_ROWS = rows
                runs[side].append(run_paper(sampler, scripts, args.n)["tokens_per_s"])
                print(f"{side}: {runs[side][-1]:,.0f} tok/s", flush=True)
    median = {side: statistics.median(v) for side, v in runs.items()}
    print(f"median: one padding {median['one padding']:,.0f}, buckets {median['buckets']:,.0f} tok/s "
          f"({median['buckets'] / median['one padding']:.2f}x)")
    args.out.write_text(json.dumps(dict(benchmark="suffix_buckets", command="python " + " ".join(sys.argv),
                                        machine=platform.node(), threads=args.threads, torch=torch.__version__,
                                        n=args.n, prompts=args.prompts, bucket_rows=bucket_rows,
                                        tokens_per_s=runs, median_tokens_per_s=median), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
