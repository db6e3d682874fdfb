"""Data parallel on Ray: one model's missing samples drawn by N engine actors at once.

Each actor is a Ray actor process that owns one engine (one Sampler, loaded once through the CLI's
own load_sampler: on its GPU, or its tensor_parallel GPUs; on CPU, its tensor_parallel cores). The
driver computes the requests one process would make (loop.pending: per (job, task) the task's seed
and the sample indices the run directory lacks), cuts them into work items of whole requests,
keeps every actor busy with one item at a time, and appends an item's rows to the run directory
when the item comes back: the driver is the only writer, and no row of an item exists before the
whole item does. An actor that dies, or hangs (no result by its item's deadline: Cluster.item_deadline),
loses only its item in flight, which goes back to the front of the queue for a live or a replacement
actor; a hung one is killed first. The engine keys its random numbers by (seed, sample
index, step), so a sample does not depend on which actor drew it, nor on N.
"""
from __future__ import annotations

import gc
import logging
import math
import socket
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from ..errors import InvalidInput
from ..params import GenerationStats, SamplingParams
from . import signals
from .loop import Draw, pending, sample_row, timed, warm_up
from .records import SampleSet

INSTALL = "pip install -e '.[ray]'"
# A work item holds about ITEM_BATCHES full engine batches of samples (the batch drains at an item's
# end), fewer where that would give an actor less than ITEMS_PER_ACTOR items (so that the last items
# end close together, and a dead actor loses little).
ITEM_BATCHES = 4
ITEMS_PER_ACTOR = 4
CONNECT_SECONDS = 10  # for the head node at --ray-address HOST:PORT to answer
RELEASE_SECONDS = 60  # for the actors to close their Sampler (tensor-parallel workers) before they are killed
# An item's deadline (without --item-timeout): FACTOR x the seconds that the rate measured on the model's
# items so far predicts for its samples, and at least FLOOR; before any item has come back, FIRST.
ITEM_SECONDS_FACTOR = 10
ITEM_SECONDS_FLOOR = 60
FIRST_ITEM_SECONDS = 1800

Item = list[tuple[Draw, list[int]]]  # whole requests: a draw and the sample indices it lacks


def requested(data_parallel: int, ray_address: Optional[str], until_pass: bool, device: str,
              item_timeout: Optional[float] = None) -> bool:
    """Whether the run asks to draw on Ray (--data-parallel > 1 or --ray-address given); InvalidInput for
    what cannot work, before anything is written."""
    if isinstance(data_parallel, bool) or not isinstance(data_parallel, int) or data_parallel < 1:
        raise InvalidInput(f"data_parallel={data_parallel!r} is invalid: must be an integer >= 1")
    if item_timeout is not None and not item_timeout > 0:
        raise InvalidInput(f"item_timeout={item_timeout!r} is invalid: must be > 0 seconds")
    if data_parallel == 1 and ray_address is None:
        if item_timeout is not None:
            raise InvalidInput(f"--item-timeout {item_timeout} is for the Ray actors of --data-parallel N or "
                               "--ray-address")
        return False
    flag = f"--data-parallel {data_parallel}" if data_parallel > 1 else f"--ray-address {ray_address}"
    if until_pass:
        raise InvalidInput(f"--until-pass is not supported with {flag}: run it in one process")
    if device not in ("cpu", "cuda"):
        raise InvalidInput(f"--device {device!r} with {flag}: give 'cpu' or 'cuda' (Ray gives each "
                           "engine its own GPUs)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise InvalidInput(f"{flag} needs Ray, which is not installed: {INSTALL}") from None
    return True


@dataclass
class Cluster:
    """A connected Ray session and its engine actors, kept from one model's draw to the next."""
    data_parallel: int
    resources: dict  # each actor's: num_cpus, num_gpus
    max_batch_size: int
    item_timeout: Optional[float] = None  # seconds an item may take (--item-timeout); None: item_deadline's own
    idle: list = field(default_factory=list)  # live actors between draws

    def item_size(self, total: int) -> int:
        """Samples per work item: ITEM_BATCHES engine batches, or less so that each of the N actors
        gets ITEMS_PER_ACTOR items."""
        share = math.ceil(total / (ITEMS_PER_ACTOR * self.data_parallel))
        return max(1, min(ITEM_BATCHES * self.max_batch_size, share))

    def item_deadline(self, samples: int, seconds_per_sample: Optional[float]) -> float:
        """Seconds an item of `samples` may take before its actor counts as hung: --item-timeout, else
        ITEM_SECONDS_FACTOR x what the model's items so far took a sample, at least ITEM_SECONDS_FLOOR
        (FIRST_ITEM_SECONDS while none has come back)."""
        if self.item_timeout is not None:
            return self.item_timeout
        if seconds_per_sample is None:
            return FIRST_ITEM_SECONDS
        return max(ITEM_SECONDS_FLOOR, ITEM_SECONDS_FACTOR * samples * seconds_per_sample)

    def start(self):
        import ray
        return ray.remote(EngineActor).options(**self.resources).remote()

    def release(self) -> None:
        """Let the actors close their Sampler (it stops tensor-parallel workers), then end them."""
        import ray
        try:
            ray.get([a.close.remote() for a in self.idle], timeout=RELEASE_SECONDS)
        except (ray.exceptions.RayError, TimeoutError):
            pass
        for actor in self.idle:
            ray.kill(actor)
        self.idle = []


@contextmanager
def connect(data_parallel: int, tensor_parallel: int, ray_address: Optional[str], device: str,
            max_batch_size: int, item_timeout: Optional[float] = None) -> Iterator[Cluster]:
    """Join the Ray cluster at `ray_address`, or start a local one sized for N actors; a process that
    is connected already keeps its session. Checks that the cluster has the actors' CPUs and GPUs
    (else they would wait forever), and shuts down only a session it started."""
    import ray
    gpus = tensor_parallel if device == "cuda" else 0
    resources = {"num_cpus": 1, "num_gpus": gpus} if gpus else {"num_cpus": tensor_parallel}
    started = not ray.is_initialized()
    if started:
        local = {"num_cpus": data_parallel * tensor_parallel} if not gpus else {}
        try:
            with signals.kept():
                if ray_address is None:
                    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, **local)
                else:
                    _check_reachable(ray_address)
                    ray.init(address=ray_address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError) as e:
            raise InvalidInput(f"--ray-address {ray_address!r}: {e}") from None
    try:
        have = ray.cluster_resources()
        for name, each in (("CPU", resources["num_cpus"]), ("GPU", gpus)):
            if each and have.get(name, 0) < each * data_parallel:
                raise InvalidInput(f"--data-parallel {data_parallel} x --tensor-parallel {tensor_parallel} needs "
                                   f"{each * data_parallel} {name}s; the Ray cluster has {have.get(name, 0):g}")
        cluster = Cluster(data_parallel, resources, max_batch_size, item_timeout)
        try:
            yield cluster
        finally:
            cluster.release()
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on fails here at once (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray checks itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {host}:{port} ({e}); start the head node with "
                              "`ray start --head` and give the address it prints") from None


class EngineActor:
    """The Ray actor: one Sampler at a time, loaded once per model, drawing the work items it is sent."""

    def __init__(self):
        self.sampler = None

    def load(self, load_sampler: Callable, path: str, name: str, prompt: str) -> None:
        self.close()
        # the driver's checkpoint where this node has it (the same machine, a shared file system),
        # else the name: a toy name or hub id resolves (downloads) here
        self.sampler = load_sampler(path if Path(path).exists() else name)
        warm_up(self.sampler, prompt)

    def draw(self, task_ids: list[str], prompts: list[str], params: list[SamplingParams]) \
            -> tuple[list[tuple[int, dict]], GenerationStats]:
        """The rows of the item's samples, by request, and the engine's counters while it drew them."""
        stats = self.sampler.stats
        stats.reset()
        stream = self.sampler.stream(prompts, params)
        rows = [(i, sample_row(task_ids[i], len(stream.prompt_ids[i]), c, seconds))
                for i, c, seconds in timed(stream, stats)]
        return rows, replace(stats)

    def close(self) -> None:
        """Free the model (and stop its tensor-parallel workers) before the next one loads."""
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def generate(cluster: Cluster, load_sampler: Callable, model: str, path: str, problems: list[dict], seed: int,
             jobs: Sequence[tuple[SamplingParams, SampleSet]]) -> Optional[dict]:
    """loop.generate on N actors: the same samples, appended as each work item comes back.
    Returns the engines' counters summed over items and actors (GenerationStats.add), the wall
    seconds from loading the model to the last item, N and the actors lost, dead or hung (None if
    nothing was missing). Raises if every actor was lost and no more may replace them (N
    replacements a draw): what came back is on disk, so rerunning resumes."""
    import ray
    todo = pending(model, problems, seed, jobs)
    if not todo:
        return None
    total = sum(len(indices) for _, indices in todo)
    queue = deque(work_items(todo, cluster.item_size(total)))
    stats, lost, restarts, error = GenerationStats(), 0, 0, None
    running: dict = {}  # ObjectRef -> (actor, its item (None while it loads the model), when it was sent)
    idle: list = []
    started = time.perf_counter()
    timed_samples, timed_seconds = 0, 0.0  # of the items back so far: the rate that deadlines follow

    def load(actor) -> None:
        running[actor.load.remote(load_sampler, path, model, todo[0][0].problem["prompt"])] = (actor, None, 0.0)

    def replace_lost(actor, item: Optional[Item], why: str) -> None:
        """A dead or hung actor: killed, its item back at the front of the queue, a replacement loading."""
        nonlocal lost, restarts
        lost += 1
        ray.kill(actor)
        if item is not None:
            queue.appendleft(item)
            tqdm.write(f"{model}: an engine actor {why}; its item of {_size(item)} samples goes back to the queue",
                       file=sys.stderr)
        if queue and restarts < cluster.data_parallel:
            restarts += 1
            load(cluster.start())

    while len(cluster.idle) < min(cluster.data_parallel, len(queue)):
        cluster.idle.append(cluster.start())
    for actor in cluster.idle[:len(queue)]:
        cluster.idle.remove(actor)
        load(actor)
    try:
        with tqdm(total=total, desc=f"{model} generate", unit="sample", disable=None) as bar:
            while running:
                rate = timed_seconds / timed_samples if timed_samples else None
                deadlines = {ref: sent + cluster.item_deadline(_size(item), rate)
                             for ref, (_, item, sent) in running.items() if item is not None}
                ready, _ = ray.wait(list(running), num_returns=1, timeout=max(
                    0.0, min(deadlines.values()) - time.perf_counter()) if deadlines else None)
                if not ready:  # hung: killed, and then as if dead
                    for ref in [r for r, t in deadlines.items() if t <= time.perf_counter()]:
                        actor, item, sent = running.pop(ref)
                        error = TimeoutError(f"hung: no result after {time.perf_counter() - sent:.0f} s")
                        replace_lost(actor, item, str(error))
                    continue
                [ref] = ready
                actor, item, sent = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:  # died: its item goes back to the queue
                    error = e
                    replace_lost(actor, item, "died")
                except ray.exceptions.RayTaskError as e:  # raised in load or draw: as it was raised
                    if isinstance(e.cause, BaseException):
                        raise e.cause from e
                    raise
                else:
                    if item is not None:
                        rows, item_stats = result
                        _append(item, rows)
                        stats.add(item_stats)
                        timed_samples += len(rows)
                        timed_seconds += time.perf_counter() - sent
                        bar.update(len(rows))
                        bar.set_postfix_str(f"{stats.generated_tokens / (time.perf_counter() - started):,.0f} tok/s")
                    idle.append(actor)
                while queue and idle:
                    actor, item = idle.pop(), queue.popleft()
                    running[_submit(actor, item)] = (actor, item, time.perf_counter())
        if queue:
            raise RuntimeError(f"{model}: {lost} engine actors were lost and no more may replace them (the last: "
                               f"{error}); the samples drawn so far are in the run directory: run the same "
                               "command again to resume")
    finally:
        cluster.idle += idle
        for actor, _, _ in running.values():  # only after an error
            ray.kill(actor)
    return {**stats.as_dict(), "wall_seconds": time.perf_counter() - started,
            "data_parallel": cluster.data_parallel, "engines_lost": lost}


def work_items(todo: Sequence[tuple[Draw, list[int]]], size: int) -> list[Item]:
    """Consecutive requests, about `size` samples an item; a request is never split (its prompt is
    prefilled once for all its samples)."""
    items, item, count = [], [], 0
    for d, indices in todo:
        item.append((d, indices))
        count += len(indices)
        if count >= size:
            items.append(item)
            item, count = [], 0
    return items + [item] if item else items


def _size(item: Item) -> int:
    return sum(len(indices) for _, indices in item)


def _submit(actor, item: Item):
    return actor.draw.remote([d.problem["task_id"] for d, _ in item], [d.problem["prompt"] for d, _ in item],
                             [replace(d.params, n=len(indices), sample_indices=indices) for d, indices in item])


def _append(item: Item, rows: list[tuple[int, dict]]) -> None:
    """The driver's only write: an item's rows, once (a sample already on disk is never appended again),
    all of them before a signal stops the run."""
    with signals.held():
        for i, row in rows:
            d, _ = item[i]
            if row["index"] in d.drawn:
                raise RuntimeError(f"{row['task_id']} sample {row['index']} came back twice")
            d.drawn.add(row["index"])
            d.sample_set.samples.append(row)

