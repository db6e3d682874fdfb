"""The report of a run: a pure function of the run directory and the command's settings (rows are
put in task and sample order first), so a resumed run reports exactly what an uninterrupted one
does, but for the measurements of "efficiency" (seconds, the engine's batches, floors and limits).
render.py turns it into report.md (the same as tables) and budget.png; environment.py adds
where it ran.

Every pass@k and rank-score@k (per model and per budget cell) comes with a 95% bootstrap interval
over problems (intervals.py), beside it in report.json as a parallel field ("pass@k_ci95",
"pass_ci95": [lo, hi]) so that readers of the point values are unchanged. A budget row's winners
list the point-best model first, then every model whose paired difference from it is not
significant: one name is a winner, more are a tie.

rank-score is reported per ranker (rankers.py), keyed by the ranker's name: a model's
"rank_score@k": {ranker: {k: value}} and "rank_score@k_ci95" beside it, "rankers": {selector: how
often it had examples to go on}; a budget cell's "rank_score" and "rank_score_ci95": {ranker: ...}
and "rank_k": {ranker: k} (under the time budget a ranker's own seconds per sample are part of the
cost, so it may afford fewer samples than pass@k's k); a row's "winner_rank_score": {ranker: winners}.
"coverage" holds each model's Beta fit (coverage.py); each budget table's "extrapolated" its fitted
pass@k beyond the samples drawn, kept apart from the rows: never a cell, never a winner.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from statistics import fmean
from typing import Optional, Sequence

import numpy as np

from ..jsonl import read_jsonl, read_jsonl_tolerant
from ..models import parse_dtype
from ..models.shape import ModelShape
from .budget import CostModel, budget_grid
from .cost import config_from_dict, intensity, mean_sample_bytes
from .coverage import EXTRAPOLATE, coverage
from .environment import hardware, versions
from .intervals import Bootstrap
from .metrics import pass_at_k_per_task
from .rankers import SELECTORS, SELF, parse_rankers, rank_score, selection_stats
from .records import SampleSet, model_dir, probes_log, ranks_log
from .waves import first_pass, pass_at_k_from_first_pass, waves

# budget kind -> (what one sample costs, title)
KINDS = {"flops": "FLOPs, paper (2 x matmul parameters x 128 tokens)",
         "flops_exact": "FLOPs, exact (as spent by the engine, prompt prefill shared)",
         "eflops": "eFLOPs, memory-aware (exact FLOPs + I x bytes the decode moves; Kinetics)",
         "time": "seconds (measured on this machine)"}
BUDGETS = {"flops": ("flops", "flops_exact", "eflops"), "eflops": ("eflops",), "time": ("time",),
           "both": ("flops", "flops_exact", "eflops", "time")}


def short_title(kind: str) -> str:
    """A budget kind's title without its explanation: "FLOPs, exact"."""
    return KINDS[kind].split(" (")[0]


def _joined(sample_set: SampleSet, problems: list[dict]) -> list[list[dict]]:
    """Per problem, its samples that have a result, by sample index, with `passed` and the test's
    `execution_seconds` (None in runs from before they were recorded) added."""
    results = sample_set.results.rows()
    per_task: dict[str, list[dict]] = {p["task_id"]: [] for p in problems}
    for key, row in sorted(sample_set.samples.rows().items(), key=lambda kv: kv[0][1]):
        if key in results and row["task_id"] in per_task:
            per_task[row["task_id"]].append({**row, "passed": bool(results[key]["passed"]),
                                             "execution_seconds": results[key].get("seconds")})
    return [per_task[p["task_id"]] for p in problems]


class ModelResults:
    """One model's rows, and everything the report computes from them."""

    def __init__(self, out: Path, name: str, problems: list[dict], config: dict, first: Optional[int] = None):
        """`first`: only each problem's first samples by index (what a draw to that count holds)."""
        directory = model_dir(out, name)
        info = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        self.name, self.shape, self.hf_config = name, ModelShape(**info["shape"]), config_from_dict(info["config"])
        self.tasks = [t[:first] for t in _joined(SampleSet(directory, "samples"), problems)]
        self.greedy = _joined(SampleSet(directory, "greedy"), problems)
        self.rankers = parse_rankers(config["ranker"])
        ranks = {r: ranks_log(directory, r).rows() for r in self.rankers if r not in (SELF, name, *SELECTORS)}
        probes = probes_log(directory).rows() if set(SELECTORS) & set(self.rankers) else {}
        for task in self.tasks:
            for row in task:
                key = row["task_id"], row["index"]
                row["scores"] = {r: ranks[r][key]["mean_logprob"] if r in ranks else row["mean_logprob"]
                                 for r in self.rankers}
                probe = row["probe"] = probes.get(key)  # None: no examples in its prompt (or no selector named)
                own = {r: ranks[r][key].get("seconds") for r in ranks} | {
                    r: probe["seconds"] if probe else 0.0 for r in SELECTORS}  # one probe serves both selectors
                row["ranker_seconds"] = {r: own.get(r, 0.0) for r in self.rankers}
                row["ranking_seconds"] = _total([own[r] for r in ranks] + [own["vote"]])
        self.rows = [row for task in self.tasks for row in task]
        self.n = min(len(task) for task in self.tasks)
        self.seconds = sum(r["seconds"] for r in self.rows)
        self.tokens = sum(r["num_tokens"] for r in self.rows)
        drawn = [task for task in self.tasks if task]
        self.drawn = len(drawn)
        self.prefill = fmean(self.shape.prefill_flops(t[0]["prompt_tokens"]) for t in drawn)
        self.decode = fmean(self.shape.decode_flops(r["prompt_tokens"], r["num_tokens"]) for r in self.rows)
        self._values: dict[tuple[str, int, Optional[str]], np.ndarray] = {}
        self.engine = read_jsonl_tolerant(directory / "engine.jsonl")
        self.dtype, self.max_batch_size = parse_dtype(config["dtype"]), config["max_batch_size"]
        self.intensity = intensity(config["gpu"], self.dtype)
        self.decode_bytes = self.sample_bytes(self.n)

    def sample_bytes(self, n: int) -> float:
        """eFLOPs' bytes a sample's decode moves when each problem draws n samples: a decode step holds
        min(all samples, max_batch_size) samples, n of each prompt, so more samples share the weights' reads."""
        batch = min(len(self.tasks) * n, self.max_batch_size)
        return mean_sample_bytes(self.hf_config, self.dtype, batch, max(1.0, batch / n),
                                 [(r["prompt_tokens"], r["num_tokens"]) for r in self.rows])

    def costs(self, n: Optional[int] = None) -> dict[str, CostModel]:
        """Cost of k samples of one problem, per budget kind (exact: one prefill for all k); `n`: the
        samples per problem eFLOPs' batch assumes (default: those drawn)."""
        decode_bytes = self.decode_bytes if n is None else self.sample_bytes(n)
        return {"flops": CostModel(0.0, self.shape.paper_flops()),
                "flops_exact": CostModel(self.prefill, self.decode),
                "eflops": CostModel(self.prefill, self.decode + self.intensity * decode_bytes),
                "time": CostModel(0.0, self.seconds / len(self.rows))}

    def rank_cost(self, kind: str, ranker: str) -> CostModel:
        """The cost of k samples ranked by `ranker`: under the time budget its own seconds per sample
        (scoring, or running the examples) are added; it spends none of the model's FLOPs."""
        cost = self.costs()[kind]
        if kind != "time":
            return cost
        return CostModel(cost.fixed, cost.per_sample + fmean(r["ranker_seconds"][ranker] or 0.0 for r in self.rows))

    def values(self, metric: str, k: int, ranker: Optional[str] = None) -> np.ndarray:
        """Per problem, pass@k or (metric "rank") rank-score@k under `ranker`."""
        if (metric, k, ranker) not in self._values:
            if metric == "pass":
                values = pass_at_k_per_task(self.counts(), k)
            else:
                values = [rank_score(ranker, [r["passed"] for r in t], [r["scores"][ranker] for r in t],
                                     [r["probe"] for r in t], k, seed=i) for i, t in enumerate(self.tasks)]
            self._values[metric, k, ranker] = np.array(values)
        return self._values[metric, k, ranker]

    def counts(self, first: Optional[int] = None) -> list[tuple[int, int]]:
        """Per problem, (samples, passed) among all its samples or its `first` ones by index."""
        return [(len(t[:first]), sum(r["passed"] for r in t[:first])) for t in self.tasks]

    def score(self, metric: str, k: int, ranker: Optional[str] = None) -> float:
        """Mean over problems of pass@k or rank-score@k."""
        return fmean(self.values(metric, k, ranker))

    def summary(self, ks: list[int], until_pass: bool, boot: Bootstrap) -> dict:
        greedy = [t[0]["passed"] for t in self.greedy if t]
        exact_unshared = fmean(self.shape.prefill_flops(r["prompt_tokens"]) for r in self.rows) + self.decode
        out = {"parameters": self.shape.parameters, "active_parameters": self.shape.active_parameters,
               "matmul_parameters": self.shape.matmul_parameters,
               "samples": len(self.rows),
               "flops_per_sample": {"paper": self.shape.paper_flops(),
                                    "exact": self.prefill * self.drawn / len(self.rows) + self.decode,
                                    "exact_without_prefix_sharing": exact_unshared},
               "seconds_per_sample": self.seconds / len(self.rows),
               "tokens_per_second": self.tokens / self.seconds if self.seconds > 0 else None,
               "mean_new_tokens": self.tokens / len(self.rows),
               "greedy_pass@1": fmean(greedy) if greedy else None,
               "kv_cache": {"blocks_total": max((e["kv_blocks_total"] for e in self.engine), default=None),
                            "blocks_peak": max((e["kv_blocks_peak"] for e in self.engine), default=None),
                            "preemptions": sum(e["preemptions"] for e in self.engine)}}
        if not until_pass:
            out["pass@k"] = {str(k): self.score("pass", k) for k in ks}
            out["pass@k_ci95"] = {str(k): boot.interval(self.values("pass", k)) for k in ks}
            out["rank_score@k"] = {r: {str(k): self.score("rank", k, r) for k in ks} for r in self.rankers}
            out["rank_score@k_ci95"] = {r: {str(k): boot.interval(self.values("rank", k, r)) for k in ks}
                                        for r in self.rankers}
            out["rankers"] = {r: selection_stats(r, [[row["probe"] for row in t] for t in self.tasks])
                              for r in self.rankers if r in SELECTORS}
        return out

    def coverage(self, ks: list[int], boot: Bootstrap) -> dict:
        """The Beta fit of the pass counts (coverage.py), checked on the first n / 4 samples."""
        first = max(1, self.n // 4)
        return coverage(self.counts(), self.counts(first), {k: self.score("pass", k) for k in ks}, boot)

    def cost(self, rows: list[dict]) -> dict:
        """What these samples of one problem cost: their number, FLOPs (paper; exact, with the prompt's
        prefill once) and engine seconds."""
        return {"samples": len(rows), "flops": len(rows) * self.shape.paper_flops(),
                "flops_exact": self.shape.prefill_flops(rows[0]["prompt_tokens"]) + sum(
                    self.shape.decode_flops(r["prompt_tokens"], r["num_tokens"]) for r in rows),
                "seconds": sum(r["seconds"] for r in rows)}

    def mean_cost(self, tasks: list[list[dict]]) -> dict:
        """cost() averaged over problems (each None without any)."""
        costs = [self.cost(t) for t in tasks]
        return {k: fmean(c[k] for c in costs) if costs else None
                for k in ("samples", "flops", "flops_exact", "seconds")}

    def efficiency(self) -> dict:
        """How fast the engine decoded, from engine.jsonl (its sessions' counters: a crashed session's
        are lost) and the floor and limits eval measured at each session's mean batch (the share of the
        decode time that steps at the limit would take: MBU, MFU, 1 / step-over-floor); the run's time
        split (the rows' execution and ranking seconds survive a crash); and the cost of a solved
        problem: its samples by index up to the first passing one, as if drawn one at a time."""
        rows = self.engine
        steps, decode, tokens = (sum(r[k] for r in rows)
                                 for k in ("decode_steps", "decode_seconds", "generated_tokens"))

        def decode_share(limit) -> Optional[float]:
            held = [(r, limit(r["roofline"])) for r in rows if r.get("roofline")]
            held = [(r, seconds) for r, seconds in held if seconds is not None]
            spent = sum(r["decode_seconds"] for r, _ in held)
            return sum(r["decode_steps"] * seconds for r, seconds in held) / spent if held and spent else None

        floor = decode_share(lambda x: x["matmul_floor_seconds"])
        split = {"prefill": sum(r["prefill_seconds"] for r in rows), "decode": decode,
                 "execution": _total(r["execution_seconds"] for t in self.tasks + self.greedy for r in t),
                 "ranking": _total(r["ranking_seconds"] for r in self.rows)}
        known = sum(v for v in split.values() if v is not None)
        solved = [t[:next(i for i, r in enumerate(t) if r["passed"]) + 1] for t in self.tasks
                  if any(r["passed"] for r in t)]
        return {"decode_tokens_per_second": tokens / decode if decode else None,
                "mean_batch": tokens / steps if steps else None,  # tokens per step: each sample's first included
                "decode_step_seconds": decode / steps if steps else None,
                "matmul_floor_seconds": floor * decode / steps if floor else None,
                "step_over_floor": 1 / floor if floor else None,
                "mbu": decode_share(lambda x: x["step_bytes"] / x["bandwidth"] if x["bandwidth"] else None),
                "mfu": decode_share(lambda x: x["step_flops"] / x["peak_flops"] if x["peak_flops"] else None),
                "time_split": {k: {"seconds": v, "share": v / known if v is not None and known else None}
                               for k, v in split.items()},
                "solved": len(solved) / len(self.tasks),
                "to_first_pass": self.mean_cost(solved)}

    def until_pass(self, n: int, ks: list[int], boot: Bootstrap) -> dict:
        """What until-pass drew (samples; tokens kept, and all the engine generated, cancelled
        samples and greedy included), against an estimate of all n (each problem's mean sample
        length x n); where the first pass fell, by wave; pass@k from the first passing index
        (waves.pass_at_k_from_first_pass); and the cost of the samples drawn until a passing one
        (those finished alongside it included)."""
        solved = [t for t in self.tasks if any(r["passed"] for r in t)]
        first = [first_pass({r["index"]: r["passed"] for r in t}) for t in self.tasks]
        full_tokens = sum(n * fmean(r["num_tokens"] for r in t) for t in self.tasks if t)
        values = {k: np.array([pass_at_k_from_first_pass(f, k) for f in first]) for k in ks}
        return {"solved": len(solved) / len(self.tasks),
                "samples_drawn": len(self.rows),
                "saved": 1 - len(self.rows) / (n * len(self.tasks)),
                "tokens": self.tokens,
                "tokens_vs_all_n_estimate": self.tokens / full_tokens,
                "engine_generated_tokens": sum(e["generated_tokens"] for e in self.engine),
                "first_pass_at": {_span(w): sum(f is not None and f in w for f in first) for w in waves(n)}
                | {"none": first.count(None)},
                "pass@k": {str(k): fmean(v) for k, v in values.items()},
                "pass@k_ci95": {str(k): boot.interval(v) for k, v in values.items()},
                "to_first_pass": self.mean_cost(solved)}


def _total(values) -> Optional[float]:
    """The sum, or None where any value is missing."""
    values = list(values)
    return None if None in values else sum(values)


def _span(wave: range) -> str:
    """A wave's 1-based sample numbers: "1", "3-4"."""
    return str(wave.stop) if len(wave) == 1 else f"{wave.start + 1}-{wave.stop}"


def budget_table(models: list[ModelResults], kind: str, boot: Bootstrap, budget_models: Sequence[str] = ()) -> dict:
    """pass@k and rank-score@k of each model at the largest k each budget affords it (Hassid et
    al. 2024's pass_flops@f) with their intervals, and the winners of each. A cell whose model could
    afford more samples than it drew is capped: its values are lower bounds of the budget's, and it is
    never a winner; a row says which capped models could change its call (`undecided_*`)."""
    costs = [m.costs()[kind] for m in models]
    unit, grid = budget_grid(costs, [m.n for m in models], [i for i, m in enumerate(models) if m.name in budget_models])
    cheapest = models[[c.cost(1) for c in costs].index(unit)].name
    rows = []
    rankers = models[0].rankers
    for budget in grid:
        cells, values = {}, {"pass": {}, **{r: {} for r in rankers}}
        capped = {metric: {} for metric in values}  # metric -> {capped model: the samples the budget buys it}
        for m, cost in zip(models, costs):
            affordable = cost.affordable(budget * unit, math.inf)
            k = min(affordable, m.n)
            v = values["pass"][m.name] = m.values("pass", k) if k else None
            cells[m.name] = {"k": k, "affordable": None if affordable == math.inf else affordable,
                             "capped": affordable > m.n, "pass": fmean(v) if k else None,
                             "pass_ci95": boot.interval(v) if k else None,
                             "rank_k": {}, "rank_capped": {}, "rank_score": {}, "rank_score_ci95": {}}
            if affordable > m.n:
                capped["pass"][m.name] = affordable
            for r in rankers:  # under the time budget a ranker's own seconds make its k smaller
                bought = m.rank_cost(kind, r).affordable(budget * unit, math.inf)
                rk = cells[m.name]["rank_k"][r] = min(bought, m.n)
                cells[m.name]["rank_capped"][r] = bought > m.n
                if bought > m.n:
                    capped[r][m.name] = bought
                v = values[r][m.name] = m.values("rank", rk, r) if rk else None
                cells[m.name]["rank_score"][r] = fmean(v) if rk else None
                cells[m.name]["rank_score_ci95"][r] = boot.interval(v) if rk else None
        winners = {metric: _winners({name: v for name, v in vs.items() if name not in capped[metric]}, boot)
                   for metric, vs in values.items()}
        best_pass = fmean(values["pass"][winners["pass"][0]]) if winners["pass"] else -math.inf
        rows.append({"budget": budget, "models": cells, "winner_pass": winners["pass"],
                     "winner_rank_score": {r: winners[r] for r in rankers},
                     # pass@k is concave in k, so pass@K <= K/k x pass@k per problem: the most a capped model's
                     # cell could reach with the samples the budget buys it; rank-score@k has no such bound
                     "undecided_pass": [name for name, bought in capped["pass"].items() if fmean(np.minimum(
                         1.0, values["pass"][name] * bought / cells[name]["k"])) >= best_pass],
                     "undecided_rank_score": {r: list(capped[r]) for r in rankers}})
    return {"kind": kind, "title": KINDS[kind], "unit": unit, "unit_model": cheapest, "rows": rows,
            "extrapolated": {m.name: [{"budget": cost.cost(k) / unit, "k": k}
                                      for k in (x * m.n for x in EXTRAPOLATE)] for m, cost in zip(models, costs)}}


def _winners(values: dict[str, Optional[np.ndarray]], boot: Bootstrap) -> list[str]:
    """The model with the best mean (the first listed on equal means), then every model whose paired
    difference from it is not significant: the 95% interval of best - model reaches 0."""
    scored = {name: v for name, v in values.items() if v is not None}
    if not scored:
        return []
    best = max(scored, key=lambda name: fmean(scored[name]))
    return [best] + [name for name, v in scored.items()
                     if name != best and boot.difference(scored[best], v)[0] <= 0]


def pass_rate_distribution(m: ModelResults) -> dict:
    """Each problem's pass rate (passing samples / samples) and their histogram: whether many samples pay
    depends on the left tail, the problems solved rarely but not never (Schaeffer et al. 2025)."""
    rates = [sum(r["passed"] for r in t) / len(t) if t else None for t in m.tasks]
    known = np.array([r for r in rates if r is not None])
    edges = [round(0.1 * j, 1) for j in range(11)]
    counts = [int((known == 0).sum())] + [int(((known > lo) & (known <= hi)).sum()) for lo, hi in zip(edges, edges[1:])]
    return {"pass_rate": rates, "histogram": {"bins": ["0"] + [f"({lo}, {hi}]" for lo, hi in zip(edges, edges[1:])],
                                              "counts": counts}}


def build_report(out: str | os.PathLike, config: dict) -> dict:
    out = Path(out)
    problems = read_jsonl(out / "problems.jsonl")
    models = [ModelResults(out, name, problems, config) for name in config["models"]]
    # until-pass: k up to the samples a model may draw, estimated from first passes
    n = {m.name: config["counts"][m.name] if config["until_pass"] else m.n for m in models}
    ks = {name: [k for k in config.get("k") or [2 ** j for j in range(c.bit_length())] if k <= c]
          for name, c in n.items()}
    boot = Bootstrap(len(problems))
    report = {"config": config, "versions": versions(), "hardware": hardware(config.get("device", "cpu")),
              "problems": len(problems),
              "models": {m.name: m.summary(ks[m.name], config["until_pass"], boot) for m in models},
              "efficiency": {m.name: m.efficiency() for m in models}}
    if config["until_pass"]:  # a problem's samples stop at its first pass: no pass rates
        report["until_pass"] = {m.name: m.until_pass(n[m.name], ks[m.name], boot) for m in models}
    else:
        report["per_problem"] = {m.name: pass_rate_distribution(m) for m in models}
        report["coverage"] = {m.name: m.coverage(ks[m.name], boot) for m in models}
        report["budgets"] = [budget_table(models, kind, boot, config.get("budget_models", ()))
                             for kind in BUDGETS[config["budget"]]]
        for table in report["budgets"]:
            for name, points in table["extrapolated"].items():
                for point in points:
                    point.update(report["coverage"][name]["extrapolated"][str(point["k"])])
            if table["kind"] == "eflops":
                table.update(gpu=config["gpu"], intensity=models[0].intensity)
    if config["price_per_gpu_hour"] is not None:
        report["cost"] = run_cost(models, config["price_per_gpu_hour"])
    return report


def run_cost(models: list[ModelResults], price_per_hour: float) -> dict:
    """The run's measured seconds in money at `price_per_hour`: each model's engine seconds (all its
    samples) and per sample, and with the tests' and rankers' seconds of its time split."""
    out = {"price_per_gpu_hour": price_per_hour, "models": {}}
    for m in models:
        split = m.efficiency()["time_split"]
        total = sum(part["seconds"] or 0.0 for part in split.values())
        out["models"][m.name] = {"engine_seconds": m.seconds, "money": m.seconds * price_per_hour / 3600,
                                 "money_per_sample": m.seconds / len(m.rows) * price_per_hour / 3600,
                                 "all_seconds": total, "all_money": total * price_per_hour / 3600}
    return out
