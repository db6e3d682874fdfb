"""What one `budget-sampler eval` run is asked to do, as one value: the CLI builds it from its
arguments, budget_sampler/eval/toy_quality.py and other scripts build it directly, run.plan checks it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..api import LoadOptions
from ..toy.ladder import DEFAULT_LADDER
from .cost import DEFAULT_GPU
from .execute import TIMEOUT

DEFAULT_N = 4            # samples per problem of the most expensive model in the default run
DEFAULT_MAX_N = 4096     # no model draws more samples per problem, unless asked
DEFAULT_PROBLEMS = 32    # toy problems in the default run (other benchmarks: all, unless limit)
DEFAULT_OUT = "runs/eval"


@dataclass(frozen=True)
class EvalConfig:
    """The defaults are the embedded default run: the shipped toy ladder on the toy suite."""
    models: str = ",".join(DEFAULT_LADDER)  # comma-separated, cheapest first
    benchmark: str = "toy"
    limit: Optional[int] = None  # None: DEFAULT_PROBLEMS for toy, else all
    n: Optional[int] = None  # the most expensive model's samples per problem (None: DEFAULT_N); others: what it buys
    max_n: Optional[int] = DEFAULT_MAX_N  # None: no bound
    n_per_model: Optional[str] = None  # comma-separated counts in the order of models, instead of n
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: Optional[int] = None  # None: the benchmark's own
    seed: int = 0
    budget: str = "both"
    gpu: str = DEFAULT_GPU  # whose FLOPs per byte the eflops budget uses (cost.py)
    price_per_gpu_hour: Optional[float] = None  # report.md turns seconds into money at this price
    ranker: str = "self"  # comma-separated: self, examples, vote, model names (rankers.py)
    k: Optional[str] = None  # comma-separated; None: 1, 2, 4, ... <= n
    out: str = DEFAULT_OUT
    until_pass: bool = False
    timeout: float = TIMEOUT
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    sandbox: str = "auto"
    data_parallel: int = 1
    ray_address: Optional[str] = None
    item_timeout: Optional[float] = None  # seconds a Ray work item may take; None: distributed.Cluster.item_deadline
    load: LoadOptions = LoadOptions()
