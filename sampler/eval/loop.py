"""The evaluation loop for one model: draw the samples the run directory lacks, execute those
without a result, score them with a ranker model; every row is appended as soon as it exists.

Sampling seeds are fixed per (model, task), and the engine's random numbers are keyed by (seed,
sample index, step), so a resumed run draws the missing sample indices exactly as an uninterrupted
run would have.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import Future, as_completed
from dataclasses import replace
from typing import Callable, Iterator, Optional, Sequence

from tqdm import tqdm

from ..params import Completion, SamplingParams
from .execute import ExecutionPool
from .records import Log, SampleSet


def task_seed(seed: int, model: str, task_id: str) -> int:
    """Fixed per (model, task), so that tasks do not share random numbers."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{model}/{task_id}".encode()).digest()[:8], "big") >> 2


def generate(load_sampler: Callable, model: str, problems: list[dict], seed: int,
             jobs: Sequence[tuple[SamplingParams, SampleSet]], pool: Optional[ExecutionPool] = None) \
        -> Optional[dict]:
    """Draw the samples each (params, sample set) job lacks, all jobs batched in one engine stream
    (a greedy job rides along with the sampled one), loading the model only if something is
    missing. Only the missing sample indices are asked for (SamplingParams.sample_indices), so a
    resumed task draws exactly the samples an uninterrupted run would have added.

    With `pool` (until-pass mode) each sample is executed as it finishes, and once one passes, the
    task's remaining samples are cancelled in the engine; tasks already solved are not drawn.
    Returns the engine's counters for this draw (None if nothing was missing)."""
    todo = []  # (problem, params asking for its missing sample indices, sample set)
    for params, sample_set in jobs:
        done = sample_set.samples.rows()
        solved = {t for (t, _), r in sample_set.results.rows().items() if r["passed"]} if pool else set()
        for p in problems:
            missing = [i for i in range(params.n) if (p["task_id"], i) not in done]
            if missing and p["task_id"] not in solved:
                todo.append((p, replace(params, n=len(missing), sample_indices=missing,
                                        seed=task_seed(seed, model, p["task_id"])), sample_set))
    if not todo:
        return None
    sampler = load_sampler()
    # one-time costs (lazy initialisation, first forward) belong to no sample's measured seconds
    sampler.generate([todo[0][0]["prompt"]], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    sampler.stats.reset()
    stream = sampler.stream([p["prompt"] for p, *_ in todo], [params for _, params, *_ in todo])
    missing = sum(params.n for _, params, *_ in todo)
    running: list[tuple[Future, int, int]] = []
    with tqdm(total=missing, desc=f"{model} generate", unit="sample", disable=None) as bar:
        for i, c, seconds in _timed(stream, sampler.stats):
            problem, _, sample_set = todo[i]
            task = problem["task_id"]
            row = {
                "task_id": task, "completion": c.text, "index": c.index,
                "prompt_tokens": len(stream.prompt_ids[i]), "num_tokens": len(c.token_ids),
                "logprob": c.logprob, "mean_logprob": c.mean_logprob,
                "finish_reason": c.finish_reason, "seconds": seconds}
            sample_set.samples.append(row)
            bar.update(1)
            bar.set_postfix_str(f"{sampler.stats.tokens_per_second:,.0f} tok/s")
            if pool is None:
                continue
            running.append((pool.submit(problem, c.text), i, c.index))
            for entry in [r for r in running if r[0].done()]:
                running.remove(entry)
                future, j, index = entry
                if _record(todo[j][2], todo[j][0]["task_id"], index, future.result()):
                    stream.cancel(j)
        for future, j, index in running:
            _record(todo[j][2], todo[j][0]["task_id"], index, future.result())
    return sampler.stats.as_dict()


def _timed(stream, stats) -> Iterator[tuple[int, Completion, float]]:
    """Each finished sample with its share of the engine seconds of the step that finished it
    (and of the steps since the previous finish)."""
    attributed = stats.seconds
    for finished in stream.steps():
        share = (stats.seconds - attributed) / len(finished)
        attributed = stats.seconds
        for i, completion in stream.live(finished):
            yield i, completion, share


def _record(sample_set: SampleSet, task_id: str, index: int, result: dict) -> bool:
    sample_set.results.append({"task_id": task_id, "index": index, "passed": result["passed"],
                               "result": result["result"]})
    return result["passed"]


def execute(problems: list[dict], sample_set: SampleSet, pool: ExecutionPool, desc: str) -> None:
    """Run the tests of every sample that has no result yet."""
    by_id = {p["task_id"]: p for p in problems}
    results = sample_set.results.rows()
    todo = [row for key, row in sample_set.samples.rows().items() if key not in results]
    if not todo:
        return
    pending: dict[Future, list[dict]] = {}  # duplicate programs share one future
    for row in todo:
        pending.setdefault(pool.submit(by_id[row["task_id"]], row["completion"]), []).append(row)
    with tqdm(total=len(todo), desc=desc, unit="sample", disable=None) as bar:
        for future in as_completed(pending):
            for row in pending[future]:
                _record(sample_set, row["task_id"], row["index"], future.result())
                bar.update(1)


def score(load_ranker: Callable, problems: list[dict], sample_set: SampleSet, log: Log, desc: str) -> None:
    """Mean per-token log-prob of each sample under `ranker` (teacher-forced, a task's samples
    scored together against one prefill of its prompt), for the samples that have none yet."""
    scored = log.rows()
    by_task: dict[str, list[dict]] = {}
    for key, row in sample_set.samples.rows().items():
        if key not in scored:
            by_task.setdefault(row["task_id"], []).append(row)
    if not by_task:
        return
    ranker = load_ranker()
    with tqdm(total=sum(map(len, by_task.values())), desc=desc, unit="sample", disable=None) as bar:
        for p in problems:
            rows = by_task.get(p["task_id"], [])
            if not rows:
                continue
            for row, lps in zip(rows, ranker.score(p["prompt"], [r["completion"] for r in rows])):
                log.append({"task_id": row["task_id"], "index": row["index"],
                            "mean_logprob": sum(lps) / max(len(lps), 1)})
            bar.update(len(rows))
