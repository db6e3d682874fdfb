"""`budget-sampler eval` (an EvalConfig, which budget_sampler/cli/eval.py builds from its arguments): sample
a ladder of models on a benchmark, run the unit tests, and report which model wins at each budget
(Hassid et al. 2024), under FLOPs and measured time, with unit tests (pass@k) and without
(rank-score@k).

With no arguments it runs the embedded default, the shipped toy ladder on the toy suite, sized by
DEFAULT_N and DEFAULT_PROBLEMS (config.py) to finish within 10 minutes on a 2-core CPU. Every argument is
checked before anything is written. Re-running the same command resumes: finished samples and
results are on disk and are neither drawn nor executed again. With --data-parallel N or
--ray-address the draws run on Ray actors (distributed.py); all else, writes included, stays here.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import sys
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from ..api import Sampler
from ..errors import ContextOverflow, InvalidInput, check_context
from ..jsonl import append_jsonl, write_atomic, write_jsonl_atomic
from ..models import ModelConfig, check_device, load_hf_config, parse_dtype, resolve_model_path
from ..models.shape import ModelShape
from ..params import SamplingParams
from . import distributed
from .budget import sample_counts
from .config import DEFAULT_N, DEFAULT_PROBLEMS, EvalConfig
from .cost import check_gpu
from .execute import ExecutionPool, check_pool_arguments, resolve_sandbox
from .loop import execute, generate, probe, score
from .metrics import parse_ks
from .rankers import SELECTORS, SELF, parse_rankers
from .records import SampleSet, model_dir, open_for_append, probes_log, ranks_log
from .render import write_report
from .report import BUDGETS, ModelResults, build_report, short_title
from .tasks import Benchmark, load_benchmark

SETTINGS = ("benchmark", "problems_sha256", "n", "n_per_model", "max_n", "temperature", "top_p", "max_new_tokens",
            "seed", "stop", "timeout", "sandbox")  # what samples and results depend on: a resumed run must match them
PILOT_PROBLEMS = 4  # problems each model samples first when measured seconds decide the sample counts
TOP_UP_ROUNDS = 3  # raises of the counts at most (_topped_up), each drawn; the first usually settles them


@dataclass
class Model:
    name: str
    path: Path
    shape: ModelShape
    config: dict  # its config.json, kept in model.json (the eflops budget's bytes need it)


@dataclass
class RunPlan:
    """Everything a run needs, checked; nothing written yet."""
    out: Path
    bench: Benchmark
    params: SamplingParams  # n: the most expensive model's samples per problem
    models: list[Model]
    rankers: list[Model]  # the models among --ranker (rankers.py)
    counts: Optional[dict[str, int]]  # samples per problem by model; None until the pilot has measured them
    budget_matched: bool  # counts from a cost ratio, raised after each draw to what the budget buys (_topped_up)
    settings: dict  # what samples and results depend on (SETTINGS), kept in the run's config.json
    report_config: dict  # the settings and the rest of the run's arguments, as its report shows them
    on_ray: bool  # draw on Ray actors (distributed.py) instead of in this process


def plan(config: EvalConfig) -> RunPlan:
    names = [m.strip() for m in str(config.models).split(",")]
    if not all(names) or len({model_dir("", n).name for n in names}) != len(names):
        raise InvalidInput(f"--models {config.models!r} is invalid: give distinct comma-separated model names")
    if config.n is not None and config.n_per_model is not None:
        raise InvalidInput("--n and --n-per-model exclude each other: give one")
    explicit = None if config.n_per_model is None else _parse_counts(config.n_per_model, names)
    limit = config.limit if config.limit is not None or config.benchmark != "toy" else DEFAULT_PROBLEMS
    bench = load_benchmark(config.benchmark, limit)
    max_new_tokens = bench.max_new_tokens if config.max_new_tokens is None else config.max_new_tokens
    n = max(explicit) if explicit else DEFAULT_N if config.n is None else config.n
    params = SamplingParams(n=n, temperature=config.temperature, top_p=config.top_p, max_new_tokens=max_new_tokens,
                            stop=bench.stop, seed=config.seed)
    if config.max_n is not None and explicit is None and config.max_n < params.n:
        raise InvalidInput(f"--max-n {config.max_n} is invalid: must be >= n={params.n}, the samples of the most "
                           "expensive model")
    ks = None if config.k is None else parse_ks(config.k, params.n if explicit is None else max(explicit))
    check_pool_arguments(config.timeout, config.workers)
    on_ray = distributed.requested(config.data_parallel, config.ray_address, config.until_pass, config.load.device,
                                   config.item_timeout)
    parse_dtype(config.load.dtype)
    check_device(config.load.device)
    check_gpu(config.gpu)
    if config.price_per_gpu_hour is not None and not config.price_per_gpu_hour >= 0:
        raise InvalidInput(f"--price-per-gpu-hour {config.price_per_gpu_hour!r} is invalid: must be >= 0")
    models = [_model(name, bench, params.max_new_tokens, config.load.revision) for name in names]
    rankers = [next((m for m in models if m.name == r), None) or _model(r, bench, params.max_new_tokens,
                                                                        config.load.revision)
               for r in parse_rankers(config.ranker) if r not in (SELF, *SELECTORS)]
    pilot = explicit is None and config.budget == "time" and not config.until_pass  # until-pass draws no pilot
    settings = {"benchmark": bench.name, "problems_sha256": hashlib.sha256(
                    json.dumps(bench.problems, sort_keys=True).encode()).hexdigest(),
                "n": None if explicit else params.n, "n_per_model": explicit, "max_n": config.max_n,
                "temperature": params.temperature, "top_p": params.top_p, "max_new_tokens": params.max_new_tokens,
                "seed": params.seed, "stop": params.stop, "timeout": config.timeout,
                "sandbox": resolve_sandbox(config.sandbox)}
    out = Path(config.out)
    if (out / "config.json").is_file():
        old = json.loads((out / "config.json").read_text(encoding="utf-8"))
        diff = [f"{k}={old.get(k)!r}" for k in SETTINGS if old.get(k) != settings[k]]
        if diff:
            raise InvalidInput(f"{out} holds a run with other settings ({', '.join(diff)}): "
                               "re-run with those settings to resume it, or choose another --out")
    report_config = {"models": names, **{k: v for k, v in settings.items() if k != "problems_sha256"},
                     "problems": len(bench.problems), "budget": config.budget, "ranker": config.ranker, "k": ks,
                     "gpu": config.gpu, "price_per_gpu_hour": config.price_per_gpu_hour,
                     "max_batch_size": config.load.max_batch_size,
                     "until_pass": config.until_pass, "device": config.load.device, "dtype": config.load.dtype,
                     "data_parallel": config.data_parallel, "counts_from": "--n-per-model" if explicit else
                     f"seconds per sample measured on {PILOT_PROBLEMS} problems first" if pilot else "paper FLOPs"}
    if explicit is not None:
        counts = dict(zip(names, explicit))
        report_config.update(counts=counts, max_n_binds=[], budget_models=[], top_up={})
    else:  # the pilot's counts come once it has measured (_pilot_counts)
        counts = None if pilot else _budget_counts(report_config, {m.name: m.shape.paper_flops() for m in models},
                                                   params.n, config.max_n)
    return RunPlan(out, bench, params, models, rankers, counts, explicit is None and not config.until_pass, settings,
                   report_config, on_ray)


def _parse_counts(text: str, names: list[str]) -> list[int]:
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if len(counts) != len(names) or min(counts) < 1:
        raise InvalidInput(f"--n-per-model {text!r} is invalid: give {len(names)} comma-separated whole numbers "
                           ">= 1, one per model of --models")
    return counts


def _budget_counts(report_config: dict, costs: dict[str, float], n: int, max_n: Optional[int]) -> dict[str, int]:
    """Each model's samples per problem from its cost of one sample (budget.sample_counts), recorded in the
    report's config with the most expensive models (whose n samples are the budget) and the models that
    --max-n holds below what the budget buys them."""
    counts, bought = sample_counts(costs, n, max_n), sample_counts(costs, n)
    report_config.update(counts=counts, budget_models=[name for name, c in costs.items() if c == max(costs.values())],
                         max_n_binds=[name for name in counts if bought[name] > counts[name]], top_up={})
    return counts


def _raised_before(p: RunPlan, counts: dict[str, int]) -> tuple[dict[str, int], bool]:
    """The counts to draw first and whether they are final: those a run before raised them to
    (counts.json's "raised", see _topped_up) if it got that far, else `counts`; always final where
    the counts are not budget-matched. Counts settled for other budget kinds (a run before with another
    --budget) are raised further for this run's."""
    if not p.budget_matched:
        return counts, True
    raised = _counts_file(p).get("raised")
    if raised is None:
        return counts, False
    p.report_config.update({k: raised[k] for k in ("counts", "top_up", "max_n_binds")})
    return raised["counts"], raised["settled"] and set(BUDGETS[p.report_config["budget"]]) <= set(raised["kinds"])


def _topped_up(p: RunPlan, counts: dict[str, int], max_n: Optional[int]) -> tuple[dict[str, int], bool]:
    """The counts raised to what the most expensive model's n samples buy each model under every budget
    kind the report tables, by the costs of the samples drawn so far (exact FLOPs count a prompt's prefill
    once and seconds are measured, so their ratios are not paper FLOPs'), and whether that settles them
    (nothing rose, or TOP_UP_ROUNDS raises were made): then no cell below that budget is capped. Each
    model's costs come from its first `counts` samples of each problem by index. eFLOPs per sample fall
    as a model draws more (its decode batch grows), so the counts are raised until they buy no more.
    Kept in counts.json before anything more is drawn, so a resumed run draws to the same counts (a
    seconds budget, measured anew on samples drawn again, would raise them differently) and stops where
    this run stops. The report's config gets the counts, `top_up` (model -> the kind that raised it
    last) and `max_n_binds`."""
    c = p.report_config
    raised = _counts_file(p).get("raised", {"rounds": 0})
    more = dict(counts)
    if raised["rounds"] < TOP_UP_ROUNDS:
        config = {**c, "ranker": SELF}  # costs only: no ranker has scored the new samples yet
        results = {m.name: ModelResults(p.out, m.name, p.bench.problems, config, first=counts[m.name])
                   for m in p.models}
        last = None
        while more != last:
            last, costs = dict(more), {name: r.costs(more[name]) for name, r in results.items()}
            for kind in BUDGETS[c["budget"]]:
                budget = max(costs[name][kind].cost(p.params.n) for name in c["budget_models"])
                for name, cost in costs.items():
                    bought = cost[kind].affordable(budget, math.inf)
                    if (held := min(bought, max_n or math.inf)) > more[name]:
                        more[name], c["top_up"][name] = held, kind
                    if bought > more[name] and name not in c["max_n_binds"]:
                        c["max_n_binds"].append(name)
    rounds = raised["rounds"] + (more != counts)
    settled = more == counts or rounds >= TOP_UP_ROUNDS
    if more != counts:
        tqdm.write("more samples per problem, for what the budget buys: " + ", ".join(
            f"{name} {counts[name]} -> {more[name]} ({short_title(c['top_up'][name])})"
            for name in more if more[name] != counts[name]), file=sys.stderr)
    c["counts"] = more
    _write_counts_file(p, raised={"counts": more, "settled": settled, "rounds": rounds, "kinds": BUDGETS[c["budget"]],
                                  "top_up": c["top_up"], "max_n_binds": c["max_n_binds"]})
    return more, settled


def _counts_file(p: RunPlan) -> dict:
    """counts.json: what decided the run's sample counts (the pilot's seconds, the raises), for a resume."""
    path = p.out / "counts.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_counts_file(p: RunPlan, **entries) -> None:
    write_atomic(p.out / "counts.json", json.dumps(_counts_file(p) | entries, indent=2) + "\n")


def _model(name: str, bench: Benchmark, max_new_tokens: int, revision: Optional[str]) -> Model:
    """Resolve (download) a model and check that its config is supported and the prompts fit its context."""
    from transformers import AutoTokenizer
    path = resolve_model_path(name, revision)
    hf_config = load_hf_config(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    longest = max(len(tokenizer(p["prompt"]).input_ids) for p in bench.problems)
    try:
        check_context(longest, max_new_tokens, ModelConfig.from_hf(hf_config).max_context)
    except ContextOverflow as e:
        raise InvalidInput(f"model {name!r}: the longest prompt ({e.prompt_tokens} tokens) + max_new_tokens "
                           f"({e.new_tokens}) exceeds its context of {e.max_context} tokens") from None
    return Model(name, path, ModelShape.from_config(hf_config), hf_config.to_dict())


class LoadedOnce:
    """A model of the ladder, loaded on first use and freed (with its workers) when the block ends,
    before the next one loads."""

    def __init__(self, load: Callable[[str], Sampler], model: Model):
        self._load, self._model, self._sampler = load, model, None

    def __call__(self) -> Sampler:
        if self._sampler is None:
            self._sampler = self._load(str(self._model.path))
        return self._sampler

    def __enter__(self) -> "LoadedOnce":
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
            gc.collect()  # a reference cycle would keep its weights and KV pool allocated


def main(config: EvalConfig, load_sampler: Optional[Callable[[str], Sampler]] = None) -> int:
    """Runs the plan; `load_sampler(path)` (default: config.load.load) loads one model of the ladder
    or the ranker (with data parallel, in each Ray actor: it must pickle)."""
    p = plan(config)
    problems = p.bench.problems
    load_sampler = load_sampler or config.load.load
    greedy_params = SamplingParams(n=1, temperature=0.0, max_new_tokens=p.params.max_new_tokens,
                                   stop=p.params.stop)
    with ExitStack() as stack:
        cluster = stack.enter_context(distributed.connect(
            config.data_parallel, config.load.tensor_parallel, config.ray_address, config.load.device,
            config.load.max_batch_size, config.item_timeout)) if p.on_ray else None
        if not (p.out / "config.json").is_file():
            write_atomic(p.out / "config.json", json.dumps(p.settings, indent=2) + "\n")
        write_jsonl_atomic(p.out / "problems.jsonl", problems)
        pool = stack.enter_context(ExecutionPool(p.out / "exec_cache.jsonl", config.workers, config.timeout,
                                                  sandbox=p.settings["sandbox"]))
        sets = {}
        for m in p.models:
            directory = model_dir(p.out, m.name)
            write_atomic(directory / "model.json", json.dumps(
                {"name": m.name, "path": str(m.path), "shape": m.shape.as_dict(), "config": m.config}, indent=2)
                + "\n")
            sets[m.name] = SampleSet(directory, "greedy"), SampleSet(directory, "samples")
            for s in sets[m.name]:
                stack.callback(s.close)

        def draw(m: Model, problems: list[dict], jobs: list) -> None:
            """The samples `jobs` lack, on Ray or here; with until-pass, tested as they finish."""
            if cluster is not None:
                stats = distributed.generate(cluster, load_sampler, m.name, str(m.path), problems, p.params.seed,
                                             jobs)
            else:
                with LoadedOnce(load_sampler, m) as load:
                    if config.until_pass:  # which problems are solved already?
                        execute(problems, sets[m.name][1], pool, f"{m.name} execute")
                    stats = generate(load, m.name, problems, p.params.seed, jobs, pool if config.until_pass else None)
            if stats is not None:
                with open_for_append(model_dir(p.out, m.name) / "engine.jsonl") as f:
                    append_jsonl(f, stats)

        counts, settled = _raised_before(p, p.counts or _pilot_counts(p, config.max_n, sets, draw))
        while True:
            for m in p.models:
                greedy, samples = sets[m.name]
                draw(m, problems, [(greedy_params, greedy), (replace(p.params, n=counts[m.name]), samples)])
            for m in p.models:
                for s in sets[m.name]:
                    execute(problems, s, pool, f"{m.name} execute {s.samples.path.stem}")
            if settled:
                break
            counts, settled = _topped_up(p, counts, config.max_n)
        if cluster is not None:
            cluster.release()  # the engines' memory, before a ranker loads here
        if set(SELECTORS) & set(parse_rankers(config.ranker)):
            for m in p.models:
                log = stack.enter_context(closing(probes_log(model_dir(p.out, m.name))))
                probe(problems, sets[m.name][1], log, pool, f"{m.name} run examples")
        for ranker in p.rankers:
            with LoadedOnce(load_sampler, ranker) as load:
                for m in p.models:
                    if m.name == ranker.name:
                        continue  # its own log-probs are in its samples
                    log = stack.enter_context(closing(ranks_log(model_dir(p.out, m.name), ranker.name)))
                    score(load, problems, sets[m.name][1], log, f"{m.name} rank by {ranker.name}")
    markdown = write_report(p.out, build_report(p.out, p.report_config))
    print(markdown)
    print(f"Report: {p.out / 'report.md'}, {p.out / 'report.json'}")
    return 0


def _pilot_counts(p: RunPlan, max_n: Optional[int], sets: dict, draw: Callable) -> dict[str, int]:
    """Sample counts from measured seconds (only the time budget asked for): every model first draws the
    n samples of the first PILOT_PROBLEMS problems, which are the run's own samples (the same indices and
    seeds), and its engine seconds per sample decide what the budget buys it. Kept in counts.json, so a
    resumed run draws to the same counts."""
    seconds = _counts_file(p).get("seconds_per_sample")
    if seconds is None:
        pilot = p.bench.problems[:PILOT_PROBLEMS]
        ids = {q["task_id"] for q in pilot}
        seconds = {}
        for m in p.models:
            samples = sets[m.name][1]
            draw(m, pilot, [(p.params, samples)])
            rows = [r for (task, _), r in samples.samples.rows().items() if task in ids]
            seconds[m.name] = sum(r["seconds"] for r in rows) / len(rows)
        _write_counts_file(p, seconds_per_sample=seconds, pilot_problems=len(pilot))
    return _budget_counts(p.report_config, seconds, p.params.n, max_n)
