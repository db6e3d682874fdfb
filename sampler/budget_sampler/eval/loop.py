"""The evaluation loop for one model: draw the samples the run directory lacks, execute those
without a result, run them on their prompts' examples and score them with ranker models; every row
is appended as soon as it exists.

Sampling seeds are fixed per (model, task), and the engine's random numbers are keyed by (seed,
sample index, step), so a resumed run draws the missing sample indices exactly as an uninterrupted
run would have.
"""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import FIRST_COMPLETED, Future, as_completed, wait
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Callable, Iterator, Optional, Sequence

from tqdm import tqdm

from ..params import Completion, SamplingParams, mean_logprob
from ..profiling import session_limits
from . import examples
from .execute import ExecutionPool
from .records import Log, SampleSet
from .waves import first_pass, next_wave


def task_seed(seed: int, model: str, task_id: str) -> int:
    """Fixed per (model, task), so that tasks do not share random numbers."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{model}/{task_id}".encode()).digest()[:8], "big") >> 2


@dataclass
class Draw:
    """One problem's samples of one job: what is on disk, what is in flight."""
    problem: dict
    params: SamplingParams  # all n samples, seeded for this (model, task)
    sample_set: SampleSet
    drawn: set[int]
    results: dict[int, bool]  # sample index -> passed
    untested: int = 0  # samples released and not yet tested (until-pass)
    prompt: int = -1   # its latest request in the stream

    def missing(self, until_pass: bool) -> list[int]:
        if until_pass:
            return next_wave(self.drawn, [i for i, ok in self.results.items() if ok], self.params.n)
        return [i for i in range(self.params.n) if i not in self.drawn]

    def request(self, indices: list[int]) -> SamplingParams:
        self.untested += len(indices)
        return replace(self.params, n=len(indices), sample_indices=indices)


def pending(model: str, problems: list[dict], seed: int, jobs: Sequence[tuple[SamplingParams, SampleSet]],
            until_pass: bool = False) -> list[tuple[Draw, list[int]]]:
    """Each (job, problem) that lacks samples, job by job: its Draw, from what the run directory
    holds, and the sample indices to draw first."""
    out = []
    for params, sample_set in jobs:
        drawn, results = _by_task(sample_set.samples.rows()), _by_task(sample_set.results.rows())
        for p in problems:
            task = p["task_id"]
            d = Draw(p, replace(params, seed=task_seed(seed, model, task)), sample_set,
                     set(drawn.get(task, {})), {i: r["passed"] for i, r in results.get(task, {}).items()})
            if indices := d.missing(until_pass):
                out.append((d, indices))
    return out


def warm_up(sampler, prompt: str) -> None:
    """One-time costs (lazy initialisation, first forward) belong to no sample's measured seconds."""
    sampler.generate([prompt], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    sampler.stats.reset()


def generate(load_sampler: Callable, model: str, problems: list[dict], seed: int,
             jobs: Sequence[tuple[SamplingParams, SampleSet]], pool: Optional[ExecutionPool] = None) \
        -> Optional[dict]:
    """Draw the samples each (params, sample set) job lacks, all jobs batched in one engine stream
    (a greedy job rides along with the sampled one), loading the model only if something is
    missing. Only the missing sample indices are asked for (SamplingParams.sample_indices), so a
    resumed task draws exactly the samples an uninterrupted run would have added.

    With `pool` (until-pass mode) a task's samples are released in waves (waves.py), each sample is
    tested as it finishes, the next wave is queued once the last one failed, and the task's request
    is cancelled in the engine once its first passing index is known.
    Returns the engine's counters for this draw, its wall seconds from before the model was loaded to
    the last sample, and the decode step's floor and limits at its mean batch (profiling.session_limits;
    None if nothing was missing)."""
    until_pass = pool is not None
    first = pending(model, problems, seed, jobs, until_pass)
    if not first:
        return None
    started = time.perf_counter()
    sampler = load_sampler()
    warm_up(sampler, first[0][0].problem["prompt"])
    stream = sampler.stream([d.problem["prompt"] for d, _ in first], [d.request(indices) for d, indices in first])
    owner = [d for d, _ in first]  # by prompt index in the stream
    for i, d in enumerate(owner):
        d.prompt = i
    tests: dict[Future, list[tuple[Draw, int]]] = {}  # duplicate programs share one future
    lengths = []  # of the samples drawn, for the mean suffix of a decode step

    def tested(future: Future, seconds: float = 0.0) -> None:
        for d, index in tests.pop(future):
            d.results[index] = _record(d.sample_set, d.problem["task_id"], index, future.result(), seconds)
            d.untested -= 1
            if first_pass(d.results) is not None:
                stream.cancel(d.prompt)
            elif d.untested == 0 and (indices := d.missing(until_pass)):
                d.prompt = stream.add(stream.prompt_ids[d.prompt], d.request(indices))
                owner.append(d)

    total = sum(d.params.n - len(d.drawn) for d, _ in first)
    with tqdm(total=total, desc=f"{model} generate", unit="sample", disable=None) as bar:
        while True:
            for i, c, seconds in timed(stream, sampler.stats):
                d = owner[i]
                d.drawn.add(c.index)
                lengths.append(len(c.token_ids))
                d.sample_set.samples.append(sample_row(d.problem["task_id"], len(stream.prompt_ids[i]), c, seconds))
                bar.update(1)
                bar.set_postfix_str(f"{sampler.stats.tokens_per_second:,.0f} tok/s")
                if until_pass:
                    tests.setdefault(pool.submit(d.problem, c.text), []).append((d, c.index))
                    for future in [f for f in tests if f.done()]:
                        tested(future)
            if not tests:
                break
            t = time.perf_counter()
            done = wait(tests, return_when=FIRST_COMPLETED).done  # the engine is idle: the wait is the tests' time
            share = (time.perf_counter() - t) / sum(len(tests[f]) for f in done)
            for future in done:
                tested(future, share)
    wall = time.perf_counter() - started
    # a step's suffix, averaged over steps: a sample of m tokens is in m steps, m / 2 long on average
    suffix = sum(m * m for m in lengths) / (2 * sum(lengths)) if sum(lengths) else 0.0
    limits = session_limits(sampler, fmean(map(len, stream.prompt_ids)), len(lengths) / len(stream.prompt_ids),
                            suffix)
    return {**sampler.stats.as_dict(), "wall_seconds": wall, "roofline": limits}


def _by_task(rows: dict[tuple, dict]) -> dict[str, dict[int, dict]]:
    by_task: dict[str, dict[int, dict]] = {}
    for (task, index), row in rows.items():
        by_task.setdefault(task, {})[index] = row
    return by_task


def sample_row(task_id: str, prompt_tokens: int, c: Completion, seconds: float) -> dict:
    """The samples.jsonl row of one finished sample."""
    return {"task_id": task_id, "completion": c.text, "index": c.index, "prompt_tokens": prompt_tokens,
            "num_tokens": len(c.token_ids), "logprob": c.logprob, "mean_logprob": c.mean_logprob,
            "finish_reason": c.finish_reason, "seconds": seconds}


def timed(stream, stats) -> Iterator[tuple[int, Completion, float]]:
    """Each finished sample with its share of the engine seconds of the step that finished it
    (and of the steps since the previous finish)."""
    attributed = stats.seconds
    for finished in stream.steps():
        share = (stats.seconds - attributed) / len(finished)
        attributed = stats.seconds
        for i, completion in stream.live(finished):
            yield i, completion, share


def _record(sample_set: SampleSet, task_id: str, index: int, result: dict, seconds: float) -> bool:
    """A result row, with its share of the wall seconds the run spent waiting for tests (a report's time
    split: rows survive a crash, so a resumed run sums all of them)."""
    sample_set.results.append({"task_id": task_id, "index": index, "passed": result["passed"],
                               "result": result["result"], "seconds": seconds})
    return result["passed"]


def execute(problems: list[dict], sample_set: SampleSet, pool: ExecutionPool, desc: str) -> None:
    """Run the tests of every sample that has no result yet."""
    by_id = {p["task_id"]: p for p in problems}
    results = sample_set.results.rows()
    todo = [row for key, row in sample_set.samples.rows().items() if key not in results]
    if not todo:
        return
    pending: dict[Future, list[dict]] = {}  # duplicate programs share one future
    last = time.perf_counter()
    for row in todo:
        pending.setdefault(pool.submit(by_id[row["task_id"]], row["completion"]), []).append(row)
    with tqdm(total=len(todo), desc=desc, unit="sample", disable=None) as bar:
        for future in as_completed(pending):
            now = time.perf_counter()
            for row in pending[future]:
                _record(sample_set, row["task_id"], row["index"], future.result(), (now - last) / len(pending[future]))
                bar.update(1)
            last = now


def probe(problems: list[dict], sample_set: SampleSet, log: Log, pool: ExecutionPool, desc: str) -> None:
    """Run every sample that has no probe row yet on its prompt's examples (examples.py), in the
    sandbox; each row gets its share of the wall seconds the probes took (the time budget counts them).
    Problems without examples run nothing."""
    by_id = {p["task_id"]: (p, found) for p in problems if (found := examples.parse(p))}
    done = log.rows()
    todo = [row for key, row in sample_set.samples.rows().items() if key not in done and row["task_id"] in by_id]
    if not todo:
        return
    pending: dict[Future, list[dict]] = {}  # duplicate programs share one future
    for row in todo:
        problem, found = by_id[row["task_id"]]
        pending.setdefault(pool.submit_program(examples.program(problem, row["completion"], found), pool.timeout),
                           []).append(row)
    last = time.perf_counter()
    with tqdm(total=len(todo), desc=desc, unit="sample", disable=None) as bar:
        for future in as_completed(pending):
            now = time.perf_counter()
            for row in pending[future]:
                found = by_id[row["task_id"]][1]
                log.append({"task_id": row["task_id"], "index": row["index"],
                            **examples.read_probe(future.result(), len(found)),
                            "seconds": (now - last) / len(pending[future])})
                bar.update(1)
            last = now


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
            t = time.perf_counter()
            scores = ranker.score(p["prompt"], [r["completion"] for r in rows])
            seconds = (time.perf_counter() - t) / len(rows)
            for row, lps in zip(rows, scores):
                log.append({"task_id": row["task_id"], "index": row["index"],
                            "mean_logprob": mean_logprob(lps), "seconds": seconds})
            bar.update(len(rows))
