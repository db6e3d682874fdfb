"""Our engine's end-to-end throughput at this checkout and at another one (e.g. `git worktree add
/tmp/base <commit>`), alternating runs in fresh processes on the same random checkpoint, so a
change can be checked for regressions: median tokens/s of --repeats runs per side and n.

    python bench/revisions.py --base /tmp/base --shape mha --n 64 256 --repeats 3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from checkout import import_paths, package

HERE = Path(__file__).resolve().parent

# run in the checkout under test: its own sampler package, the model built by this checkout's bench
CHILD = """
import json, sys, torch
sys.path[:0] = {paths!r} + [{bench!r}]
from e2e import run_ours
from {package} import Sampler
torch.set_num_threads({threads})
torch.manual_seed(1)
prompt = torch.randint(2, {vocab}, ({prompt_tokens},)).tolist()
s = Sampler.from_pretrained({model!r}, max_batch_size={max_batch_size})
r = run_ours(s, prompt, {n}, {new_tokens}, top_p={top_p})
print(json.dumps(dict(tokens_per_s=r["tokens_per_s"], decode_step_ms=r["decode_step_ms"])))
"""


def run(root: Path, model: Path, shape: dict, n: int, args) -> dict:
    code = CHILD.format(paths=import_paths(root), package=package(root), bench=str(HERE), threads=args.threads,
                        vocab=shape["config"]["vocab_size"], prompt_tokens=args.prompt_tokens, model=str(model),
                        max_batch_size=args.max_batch_size,
                        n=n, new_tokens=args.new_tokens, top_p=shape["top_p"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    from throughput import SHAPES, make_model
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other checkout (its repository root)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mha")
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "revisions_cpu-2core.json"))
    args = ap.parse_args(argv)
    shape = SHAPES[args.shape]
    roots = {"base": Path(args.base).resolve(), "this": HERE.parent}
    revs = {k: subprocess.run(["git", "-C", str(r), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() for k, r in roots.items()}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        make_model(Path(d), shape["config"])
        for n in args.n:
            runs = {k: [] for k in roots}
            for _ in range(args.repeats):
                for k, root in roots.items():
                    runs[k].append(run(root, Path(d), shape, n, args))
            row = dict(n=n, **{f"{k}_tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in v), 1)
                               for k, v in runs.items()},
                       **{f"{k}_runs": [round(r["tokens_per_s"]) for r in v] for k, v in runs.items()})
            row["this_over_base"] = round(row["this_tokens_per_s"] / row["base_tokens_per_s"], 2)
            rows.append(row)
            print(f"n={n:4d}  base {row['base_tokens_per_s']:8,.0f} tok/s  this {row['this_tokens_per_s']:8,.0f} tok/s"
                  f"  ratio {row['this_over_base']:.2f}", flush=True)
    result = dict(benchmark="revisions", command=" ".join(["python bench/revisions.py", *(argv or sys.argv[1:])]),
                  machine=platform.node(), threads=args.threads, revisions=revs, shape=args.shape,
                  prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, repeats=args.repeats, results=rows)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
