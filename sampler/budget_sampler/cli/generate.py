"""`budget-sampler generate`: n samples per prompt from the command line, one JSON line per sample."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import InvalidInput
from ..jsonl import read_jsonl, write_jsonl_atomic
from ..params import SamplingParams
from .common import add_model_arguments, load_sampler

HELP = "sample n completions per prompt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", metavar="FILE.jsonl", help='JSON lines with a "prompt" field')
    p.add_argument("-n", "--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 disables")
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ignore-eos", action="store_true", help="generate max-new-tokens regardless of EOS")
    p.add_argument("--out", metavar="FILE.jsonl", default=None, help="output (default: stdout)")


def _read_prompts(path: str) -> list[str]:
    prompts = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row.get("prompt"), str):
            raise InvalidInput(f"{path}: row {number} has no string field 'prompt'")
        prompts.append(row["prompt"])
    if not prompts:
        raise InvalidInput(f"{path}: no prompts in the file")
    return prompts


def main(args: argparse.Namespace) -> int:
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            min_p=args.min_p, max_new_tokens=args.max_new_tokens, stop=args.stop,
                            seed=args.seed, ignore_eos=args.ignore_eos)
    prompts = [args.prompt] if args.prompt is not None else _read_prompts(args.prompts)
    sampler = load_sampler(args)
    results = sampler.generate(prompts, params, progress=True)
    rows = [dict(prompt_index=i, sample_index=c.index, text=c.text, num_tokens=len(c.token_ids),
                 logprob=c.logprob, finish_reason=c.finish_reason)
            for i, completions in enumerate(results) for c in completions]
    if args.out:
        write_jsonl_atomic(args.out, rows)
    else:
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    s = sampler.stats
    print(f"{s.generated_tokens} tokens in {s.seconds:.2f}s ({s.tokens_per_second:,.0f} tok/s), "
          f"prefill {s.prefill_tokens} tokens; KV blocks: peak {s.kv_blocks_peak} of {s.kv_blocks_total}, "
          f"{s.preemptions} preemptions", file=sys.stderr)
    return 0
