"""What streaming costs the engine itself: the same request drawn with `add_request(stream=True)` (every
token's delta and released text, taken after each step, as the server's engine thread does) and without,
alternating in one process, --repeats times each; the median tokens/s of each and their ratio.

    python bench/stream_deltas.py --model toy-s --n 64 --new-tokens 128 --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def draw(engine, prompt_ids: list[int], params, stream: bool) -> float:
    """Tokens per second of one request of params.n samples, deltas taken after every step if streamed."""
    start, tokens = time.perf_counter(), 0
    engine.add_request(prompt_ids, params, stream=stream)
    while engine.has_unfinished():
        tokens += sum(len(c.token_ids) for _, c in engine.step())
        engine.take_deltas()
    return tokens / (time.perf_counter() - start)


def main(argv=None) -> int:
    from budget_sampler import Sampler, SamplingParams
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-s")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sampler = Sampler.from_pretrained(args.model, max_batch_size=args.n)
    engine, prompt_ids = sampler.engine, sampler.encode("def total(xs):\n")
    params = SamplingParams(n=args.n, temperature=0.8, top_p=0.95, max_new_tokens=args.new_tokens,
                            ignore_eos=True, seed=0)
    draw(engine, prompt_ids, params, True)  # warm
    rates = {"plain": [], "streamed": []}
    for i in range(args.repeats):
        for mode in (("plain", "streamed") if i % 2 == 0 else ("streamed", "plain")):
            rates[mode].append(round(draw(engine, prompt_ids, params, mode == "streamed"), 1))
    median = {mode: statistics.median(v) for mode, v in rates.items()}
    result = dict(benchmark="stream_deltas", command=" ".join(["python bench/stream_deltas.py",
                                                               *(argv or sys.argv[1:])]),
                  machine=platform.node(), threads=args.threads, torch=torch.__version__, model=args.model, n=args.n,
                  new_tokens=args.new_tokens, tokens_per_second=rates, median_tokens_per_second=median,
                  streamed_over_plain=round(median["streamed"] / median["plain"], 3))
    out = HERE / "results" / "stream_deltas_cpu-2core.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"plain {median['plain']:,.0f} tok/s, streamed {median['streamed']:,.0f} tok/s, "
          f"ratio {result['streamed_over_plain']:.3f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
