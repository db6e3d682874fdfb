"""The CPU sampling reference (budget_sampler_kernels/sampling.py's sample_ref, what a CPU decode step samples with)
at this checkout and at another one, alternating in one process, one thread, median of --repeats.

Logits are bench/kernel_inputs.py's (randn x 3: a few peaked tokens), T = 0.8, at the toy ladder's
vocabulary (512) and larger ones, with top-p 0.95 (the paper's), top-k 50 and neither.

    python bench/sampling_ref.py --base /tmp/base --repeats 7
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from checkout import kernels_dir
from kernel_inputs import sampling_inputs

import budget_sampler_kernels._triton  # noqa: F401  (the checkouts' sampling modules import it relatively)

HERE = Path(__file__).resolve().parent

SHAPES = [(256, 512), (64, 4096), (256, 4096), (64, 32000), (256, 32000)]
SETTINGS = {"top_p=0.95": dict(top_p=0.95), "top_k=50": dict(top_p=1.0, top_k=50), "T only": dict(top_p=1.0)}


def load(root: Path, name: str):
    """The sampling.py of a checkout's kernels, as a module of this checkout's kernels package."""
    spec = importlib.util.spec_from_file_location(f"budget_sampler_kernels.{name}", kernels_dir(root) / "sampling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sampling_ref_cpu-2core.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sides = {"base": load(args.base, "base_sampling"), "this": load(HERE.parent, "this_sampling")}
    rows = []
    for n, vocab in SHAPES:
        for setting, kw in SETTINGS.items():
            inputs = sampling_inputs(n, vocab, temperature=0.8, **kw)
            ms = {side: [] for side in sides}
            for _ in range(args.repeats):
                for side, module in sides.items():
                    t = time.perf_counter()
                    module.sample_ref(*inputs)
                    ms[side].append(1e3 * (time.perf_counter() - t))
            median = {side: statistics.median(v) for side, v in ms.items()}
            rows.append(dict(n=n, vocab=vocab, setting=setting, median_ms=median, ms=ms,
                             this_over_base=median["this"] / median["base"]))
            print(f"{n:4d} x {vocab:6d} {setting:>10}: base {median['base']:8.2f} ms, this {median['this']:8.2f} ms "
                  f"({rows[-1]['this_over_base']:.2f}x)", flush=True)
    args.out.write_text(json.dumps(dict(benchmark="sampling_ref", command="python " + " ".join(sys.argv),
                                        machine=platform.node(), threads=1, torch=torch.__version__,
                                        base=str(args.base), rows=rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
