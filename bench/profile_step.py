"""Where one decode step's time goes: the step's wall time (replayed from CUDA graphs on CUDA), its
linear layers alone at the same batch (the matmul floor, also replayed from a graph), and the
kernels of an eager step as the torch profiler sees them, by name and by op group, per step.

    python bench/profile_step.py                  # CUDA: Qwen2.5-1.5B's shape, random weights
    python bench/profile_step.py --dry-run        # CPU: a tiny shape, the same code paths

The measurement is budget_sampler/profiling.py's (`budget-sampler profile` runs it on any model), timed at
each sample's new_tokens / 2-th token. Writes $OUT/profile_step_<device>.json (or --out) and prints
one table per (n, top_p).
"""
from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
from checkout import import_paths  # noqa: E402 (bench/, the script's folder, is on sys.path)

sys.path[:0] = import_paths(ROOT)  # this checkout's packages, installed or not (the GPU machine has no registry)

import torch  # noqa: E402
from gpu_check import Setup, make_checkpoint, release  # noqa: E402

from budget_sampler.profiling import measure  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes")
    ap.add_argument("--n", type=int, nargs="+", default=None)
    ap.add_argument("--top-p", type=float, nargs="+", default=[1.0, 0.95])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    setup = Setup(args.dry_run)
    ns = args.n or setup.e2e_n
    from budget_sampler import Sampler
    rows = []
    with tempfile.TemporaryDirectory() as d:
        make_checkpoint(setup, Path(d))
        prompt_ids = torch.randint(2, 512, (setup.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
        sampler = Sampler.from_pretrained(d, device=setup.device, dtype=setup.dtype, max_batch_size=max(ns))
        with torch.inference_mode():
            for top_p in args.top_p:
                for n in ns:
                    row = dict(top_p=top_p, **measure(sampler, prompt_ids, n, top_p, setup.new_tokens, args.repeats))
                    rows.append(row)
                    print(f"n={n} top_p={top_p}: step {row['step_ms']:.3f} ms, "
                          f"kernels {sum(row['parts_ms'].values()):.3f} ms"
                          f" (eager), matmul floor {row['floor_ms']:.3f} ms", flush=True)
                    print("  by group (ms): " + ", ".join(f"{g} {ms:.3f}" for g, ms in row["parts_ms"].items()))
                    for k in row["ops"][:12]:
                        print(f"  {k['us_per_step']:9.1f} us  {k['calls_per_step']:6.1f}x  {k['name']}", flush=True)
        del sampler
        release(setup)
    device = torch.cuda.get_device_name() if setup.device == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    out = Path(args.out) if args.out else Path(os.environ.get("OUT", ".")) / f"profile_step_{slug}.json"
    out.write_text(json.dumps(dict(command="python bench/profile_step.py " + " ".join(argv or sys.argv[1:]),
                                   device=device, torch=torch.__version__, model=setup.model,
                                   dtype=str(setup.dtype), prompt_tokens=setup.prompt_tokens, results=rows),
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
