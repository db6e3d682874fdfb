"""`budget-sampler eval` (arguments: sampler/cli/eval.py): sample a ladder of models on a benchmark,
run the unit tests, and report which model wins at each budget (Hassid et al. 2024), under FLOPs
and measured time, with unit tests (pass@k) and without (rank-score@k).

With no arguments it runs the embedded default, the shipped toy ladder on the toy suite, sized by
DEFAULT_N and DEFAULT_PROBLEMS to finish within 10 minutes on a 2-core CPU. Every argument is
checked before anything is written. Re-running the same command resumes: finished samples and
results are on disk and are neither drawn nor executed again. With --data-parallel N or
--ray-address the draws run on Ray actors (distributed.py); all else, writes included, stays here.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Optional

from ..api import Sampler
from ..errors import ContextOverflow, InvalidInput, check_context
from ..jsonl import append_jsonl, write_atomic, write_jsonl_atomic
from ..models import ModelConfig, check_device, load_hf_config, parse_dtype, resolve_model_path
from ..models.shape import ModelShape
from ..params import SamplingParams
from . import distributed
from .execute import ExecutionPool, check_pool_arguments, resolve_sandbox
from .loop import execute, generate, score
from .metrics import parse_ks
from .records import SampleSet, model_dir, open_for_append, ranks_log
from .report import build_report, write_report
from .tasks import Benchmark, load_benchmark

DEFAULT_N = 32           # samples per problem in the default run
DEFAULT_PROBLEMS = 60    # toy problems in the default run (other benchmarks: all, unless --limit)
DEFAULT_OUT = "runs/eval"
SETTINGS = ("benchmark", "problems_sha256", "n", "temperature", "top_p", "max_new_tokens", "seed",
            "stop", "timeout", "sandbox")  # what samples and results depend on: a resumed run must match them


@dataclass
class Model:
    name: str
    path: Path
    shape: ModelShape


@dataclass
class RunPlan:
    """Everything a run needs, checked; nothing written yet."""
    out: Path
    bench: Benchmark
    params: SamplingParams
    models: list[Model]
    ranker: Optional[Model]
    settings: dict
    config: dict
    on_ray: bool  # draw on Ray actors (distributed.py) instead of in this process


def plan(args: argparse.Namespace) -> RunPlan:
    names = [m.strip() for m in str(args.models).split(",")]
    if not all(names) or len({model_dir("", n).name for n in names}) != len(names):
        raise InvalidInput(f"--models {args.models!r} is invalid: give distinct comma-separated model names")
    limit = args.limit if args.limit is not None or args.benchmark != "toy" else DEFAULT_PROBLEMS
    bench = load_benchmark(args.benchmark, limit)
    max_new_tokens = bench.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=max_new_tokens, stop=bench.stop, seed=args.seed)
    ks = None if args.k is None else parse_ks(args.k, params.n)
    check_pool_arguments(args.timeout, args.workers)
    on_ray = distributed.requested(args.data_parallel, args.ray_address, args.until_pass, args.device)
    parse_dtype(args.dtype)
    check_device(args.device)
    models = [_model(name, bench, params.max_new_tokens, args.revision) for name in names]
    ranker = None if args.ranker == "self" else next(
        (m for m in models if m.name == args.ranker), None) or _model(args.ranker, bench, params.max_new_tokens,
                                                                       args.revision)
    settings = {"benchmark": bench.name, "problems_sha256": hashlib.sha256(
                    json.dumps(bench.problems, sort_keys=True).encode()).hexdigest(),
                "n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                "max_new_tokens": params.max_new_tokens, "seed": params.seed, "stop": params.stop,
                "timeout": args.timeout, "sandbox": resolve_sandbox(args.sandbox)}
    out = Path(args.out)
    if (out / "config.json").is_file():
        old = json.loads((out / "config.json").read_text(encoding="utf-8"))
        diff = [f"{k}={old.get(k)!r}" for k in SETTINGS if old.get(k) != settings[k]]
        if diff:
            raise InvalidInput(f"{out} holds a run with other settings ({', '.join(diff)}): "
                               "re-run with those settings to resume it, or choose another --out")
    config = {"models": names, **{k: v for k, v in settings.items() if k != "problems_sha256"},
              "problems": len(bench.problems), "budget": args.budget, "ranker": args.ranker, "k": ks,
              "until_pass": args.until_pass, "device": args.device, "dtype": args.dtype,
              "data_parallel": args.data_parallel}
    return RunPlan(out, bench, params, models, ranker, settings, config, on_ray)


def _model(name: str, bench: Benchmark, max_new_tokens: int, revision: Optional[str]) -> Model:
    """Resolve (download) a model and check that its config is supported and the prompts fit its context."""
    from transformers import AutoTokenizer
    path = resolve_model_path(name, revision)
    config = load_hf_config(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    longest = max(len(tokenizer(p["prompt"]).input_ids) for p in bench.problems)
    try:
        check_context(longest, max_new_tokens, ModelConfig.from_hf(config).max_context)
    except ContextOverflow as e:
        raise InvalidInput(f"model {name!r}: the longest prompt ({e.prompt_tokens} tokens) + max_new_tokens "
                           f"({e.new_tokens}) exceeds its context of {e.max_context} tokens") from None
    return Model(name, path, ModelShape.from_config(config))


def main(args: argparse.Namespace, load_sampler: Callable[[str], Sampler]) -> int:
    """Runs the plan; `load_sampler(path)` loads one model of the ladder or the ranker (with
    --data-parallel / --ray-address, in each Ray actor: it must pickle)."""
    p = plan(args)
    problems = p.bench.problems

    def loader(model: Model):
        return cache(lambda: load_sampler(str(model.path)))

    greedy_params = SamplingParams(n=1, temperature=0.0, max_new_tokens=p.params.max_new_tokens,
                                   stop=p.params.stop)
    with ExitStack() as stack:
        cluster = stack.enter_context(distributed.connect(args.data_parallel, args.tensor_parallel, args.ray_address,
                                                          args.device, args.max_batch_size)) if p.on_ray else None
        if not (p.out / "config.json").is_file():
            write_atomic(p.out / "config.json", json.dumps(p.settings, indent=2) + "\n")
        write_jsonl_atomic(p.out / "problems.jsonl", problems)
        pool = stack.enter_context(ExecutionPool(p.out / "exec_cache.jsonl", args.workers, args.timeout,
                                                  sandbox=p.settings["sandbox"]))
        sets = {}
        for m in p.models:
            directory = model_dir(p.out, m.name)
            write_atomic(directory / "model.json", json.dumps(
                {"name": m.name, "path": str(m.path), "shape": m.shape.as_dict()}, indent=2) + "\n")
            greedy, samples = sets[m.name] = SampleSet(directory, "greedy"), SampleSet(directory, "samples")
            stack.callback(greedy.close)
            stack.callback(samples.close)
            jobs = [(greedy_params, greedy), (p.params, samples)]
            if cluster is not None:
                stats = distributed.generate(cluster, load_sampler, m.name, str(m.path), problems, p.params.seed, jobs)
            else:
                load = loader(m)
                if args.until_pass:  # which problems are solved already?
                    execute(problems, samples, pool, f"{m.name} execute")
                stats = generate(load, m.name, problems, p.params.seed, jobs, pool if args.until_pass else None)
                if load.cache_info().currsize:  # free the model (and its workers) before the next loads
                    load().close()
                    load.cache_clear()
                    gc.collect()  # a reference cycle would keep its weights and KV pool allocated
            if stats is not None:
                with open_for_append(directory / "engine.jsonl") as f:
                    append_jsonl(f, stats)
        if cluster is not None:
            cluster.release()  # the engines' memory, before a ranker loads here
        for m in p.models:
            for s in sets[m.name]:
                execute(problems, s, pool, f"{m.name} execute {s.samples.path.stem}")
        if p.ranker is not None:
            load = loader(p.ranker)
            for m in p.models:
                if m.name == p.ranker.name:
                    continue  # its own log-probs are in its samples
                log = ranks_log(model_dir(p.out, m.name), p.ranker.name)
                stack.callback(log.close)
                score(load, problems, sets[m.name][1], log, f"{m.name} rank by {p.ranker.name}")
    markdown = write_report(p.out, build_report(p.out, p.config))
    print(markdown)
    print(f"Report: {p.out / 'report.md'}, {p.out / 'report.json'}")
    return 0
