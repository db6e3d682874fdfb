"""The generation loop: schedule -> run -> postprocess, once per step.

schedule (budget_sampler/scheduler.py): grow running samples into the KV blocks their next tokens need,
preempting when the pool is short, and admit waiting samples into free slots. run: prefill the
prompts admitted for the first time, rebuild readmitted samples' KV, draw new samples' first tokens
from their prompts' logits, then the model runner's decode step for all running samples.
postprocess: append tokens, stop on EOS / stop strings / length, and hand back the finished ones.

Overlap (on CUDA, as SGLang's overlap scheduler and vLLM's async scheduling): a step launches the
decode step t + 1 before it postprocesses step t, so the host's work (the stop search,
detokenization, finishing, scheduling) runs while the GPU computes. Step t + 1 is launched for
every sample still running when it is scheduled; a sample that step t finishes or that is
preempted has its row of step t + 1 dropped, and a freed slot is refilled a step later. Each
sample's tokens are keyed by (seed, sample index, step), so no sample changes. The tokens of step
t are in the device's slot state when t + 1 runs, and every write the host makes between the two
(slots, block tables, the batch) is queued behind step t on the GPU. A step whose samples ask for
top log-probs (read from the step's logits) runs without overlap.

Out of memory (another process on the GPU, fragmentation): a decode step that fails halves the
running batch for good (the samples started last are preempted and resume identically, by
recompute) and runs again; a prefill that fails runs again once after the allocator's cache is
freed. One line is logged each time; only a step that fails with one sample running, or a prefill
that fails twice, is an error, which names the numbers.

One Engine owns the model, the KV pool and the requests; it is not thread-safe (one thread drives
it, as in nano-vllm: add_request / abort_request / step).
"""
from __future__ import annotations

import logging
import random
import time
from typing import NamedTuple, Optional, Protocol, Sequence

import torch

from .cache import BlockPool, PrefillBatch, cdiv
from .errors import InvalidInput, check_context
from .memory import kv_bytes_per_token, num_kv_blocks, release_cached
from .models.loader import eos_token_ids, load_tokenizer
from .params import Completion, Delta, GenerationStats, SamplingParams, SchedulerStats
from .runner import BatchGroup, Launched, ModelRunner
from .scheduler import Admission, Scheduler
from .scoring import Scored, score
from .sequence import Request, Sample
from .stopping import Detokenizer, IncrementalText

logger = logging.getLogger("budget_sampler")


def default_block_size(device: torch.device) -> int:
    """Tokens per KV block: vLLM's 16 on CUDA; on CPU 8, measured ~10% faster decode steps than 16
    or 32 (the reference attention gathers whole blocks, so a smaller last block wastes less)."""
    return 8 if device.type == "cpu" else 16


class Flight(NamedTuple):
    """A launched decode step: its samples in row order, how many times each had been admitted
    then, and what the runner returns for it."""
    samples: list[Sample]
    admissions: list[int]
    launched: Launched


class EngineClient(Protocol):
    """What the Sampler, its streams and the server's engine thread use of an engine: an Engine,
    or rank 0's ReplicatedEngine, which replays each call that changes state on the other ranks."""
    model: torch.nn.Module  # with tensor parallel, rank 0's part
    tokenizer: object
    stats: GenerationStats

    @property
    def max_context(self) -> int: ...
    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None: ...
    def add_request(self, prompt_ids: list[int], params: SamplingParams, stream: bool = False) -> int: ...
    def take_deltas(self) -> list[tuple[int, Delta]]: ...
    def scheduler_stats(self) -> SchedulerStats: ...
    def abort_request(self, request_id: int) -> None: ...
    def is_active(self, request_id: int) -> bool: ...
    def has_unfinished(self) -> bool: ...
    def step(self) -> list[tuple[int, Completion]]: ...
    def score(self, prompt_ids: list[int], completions: list[list[int]], top_k: int = 0) -> list[Scored]: ...


class Engine:
    @classmethod
    def from_checkpoint(cls, path, hf_config, model, max_batch_size: int = 256, kv_cache_memory=None,
                        cuda_graphs: Optional[bool] = None) -> "Engine":
        """An Engine around a loaded model (or one rank's part of it), with its checkpoint's
        tokenizer and EOS ids."""
        tokenizer = load_tokenizer(path)
        return cls(model, tokenizer, eos_token_ids(path, hf_config, tokenizer), max_batch_size, kv_cache_memory,
                   cuda_graphs=cuda_graphs)

    def __init__(self, model, tokenizer, eos_token_ids: set[int], max_batch_size: int = 256,
                 kv_cache_memory=None, block_size: Optional[int] = None, cuda_graphs: Optional[bool] = None):
        self.model, self.tokenizer, self.eos_token_ids = model, tokenizer, eos_token_ids
        self.detokenizer = Detokenizer(tokenizer)
        weight = model.embed_tokens.weight
        self.device = weight.device
        if block_size is None:
            block_size = default_block_size(self.device)
        for name, value in (("max_batch_size", max_batch_size), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name}={value!r} is invalid: must be an integer >= 1")
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        if cuda_graphs and self.device.type != "cuda":
            raise InvalidInput("cuda_graphs=True needs the model on a CUDA device")
        blocks = num_kv_blocks(model.cfg, weight.dtype, self.device, kv_cache_memory, block_size, max_batch_size)
        self.pool = BlockPool(model.cfg, blocks, block_size, self.device, weight.dtype)
        self._block_bytes = kv_bytes_per_token(model.cfg, weight.dtype) * block_size
        self.runner = ModelRunner(model, self.pool, max_batch_size, cuda_graphs)
        self.requests: dict[int, Request] = {}  # insertion order = admission order
        self.scheduler = Scheduler(self.pool, max_batch_size, self.requests)
        self.scheduler.max_running = self.runner.max_rows  # below max_batch_size if a graph capture ran out of memory
        self.stats = GenerationStats(kv_blocks_total=self.pool.capacity)
        self._batch: list[Sample] = []  # the running samples in the runner's row order
        self.overlap = self.device.type == "cuda"  # launch step t + 1 before postprocessing step t
        self._flight: Optional[Flight] = None  # a launched step not yet postprocessed
        self._deltas: list[tuple[int, Delta]] = []  # streamed requests' new tokens, until taken
        self._next_id = 0

    # -- requests ---------------------------------------------------------------------------------

    def add_request(self, prompt_ids: list[int], params: SamplingParams, stream: bool = False) -> int:
        """`stream`: every step also reports each running sample's new token and text (take_deltas)."""
        self.validate(prompt_ids, params)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        rid, self._next_id = self._next_id, self._next_id + 1
        self.requests[rid] = Request(rid, list(prompt_ids), params, seed, self.detokenizer.prompt(prompt_ids),
                                     stream=stream)
        return rid

    def take_deltas(self) -> list[tuple[int, Delta]]:
        """The deltas of streamed requests' samples since the last call, with their request ids, in
        step order. Take them after each step and hand them on before that step's Completions (a
        sample may get its first token and finish in one step); a finishing sample's last token has
        no delta: its Completion ends it."""
        deltas, self._deltas = self._deltas, []
        return deltas

    def scheduler_stats(self) -> SchedulerStats:
        running = {s.request.request_id for s in self.scheduler.running}
        return SchedulerStats(len(running), len(self.requests) - len(running), len(self.scheduler.running),
                              sum(r.pending for r in self.requests.values()) + len(self.scheduler.waiting),
                              self.pool.num_used, self.pool.capacity)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """The prompt and its fit (params checked themselves when made)."""
        if not prompt_ids:
            raise InvalidInput("prompt is empty: it must encode to at least one token")
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidInput(f"prompt token id {bad} is out of range: the vocabulary has {vocab} tokens")
        check_context(len(prompt_ids), params.max_new_tokens, self.max_context)
        bs = self.pool.block_size
        need = cdiv(len(prompt_ids), bs) + cdiv(params.max_new_tokens, bs)
        if need > self.pool.capacity:
            raise InvalidInput(f"one sample of this prompt ({len(prompt_ids)} tokens) with max_new_tokens="
                               f"{params.max_new_tokens} needs {need} KV blocks of {bs} tokens, but the KV cache "
                               f"holds {self.pool.capacity}: raise kv_cache_memory or lower max_new_tokens")

    def abort_request(self, request_id: int) -> None:
        req = self.requests.get(request_id)
        if req is None:
            return
        self.scheduler.abort(req)
        req.live, req.next_sample = 0, req.params.n
        self._release(req)

    @property
    def max_context(self) -> int:
        return self.model.cfg.max_context

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def is_active(self, request_id: int) -> bool:
        return request_id in self.requests

    def score(self, prompt_ids: list[int], completions: list[list[int]], top_k: int = 0) -> list[Scored]:
        """Teacher-forced log-probs (see budget_sampler/scoring.py): a model call, like step."""
        return score(self, prompt_ids, completions, top_k)

    # -- the step ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[tuple[int, Completion]]:
        """Schedule (grow, preempt, admit), then one decode step for every running sample; returns
        the samples that finished, with their request ids. With overlap, the step launched here is
        postprocessed by the next call, after it launches its own."""
        finished: list[tuple[int, Completion]] = []
        t0, prefill0 = time.perf_counter(), self.stats.prefill_seconds
        updates, preempted = self.scheduler.grow(ahead=1 if self._flight else 0)
        self.stats.preemptions += preempted
        self.runner.set_blocks(updates)
        self._track_memory()
        while (admitted := self.scheduler.admit(self._new_sample)) is not None:
            finished += self._start(admitted)
        if self.scheduler.running:
            if self.scheduler.changed:
                self._set_batch()
            overlap = self.overlap and not any(s.request.params.logprobs for s in self._batch)
            if not overlap:
                finished += self._land()
            launched = self._launch()
            self.stats.decode_steps += 1
            finished += self._land()
            self._flight = Flight(self._batch, [s.admissions for s in self._batch], launched)
            if not overlap:
                finished += self._land()
        else:
            finished += self._land()
        self.stats.decode_seconds += time.perf_counter() - t0 - (self.stats.prefill_seconds - prefill0)
        return finished

    def _land(self) -> list[tuple[int, Completion]]:
        """Postprocess the step in flight, if any: the rows of samples that still hold the slot they
        had at its launch (not finished, preempted or aborted since)."""
        if self._flight is None:
            return []
        flight, self._flight = self._flight, None
        tokens, logprobs = self.runner.collect(flight.launched)
        rows = [i for i, (s, mark) in enumerate(zip(flight.samples, flight.admissions))
                if s.slot is not None and s.admissions == mark]
        samples = [flight.samples[i] for i in rows]
        self._keep_top_logprobs(samples, rows)
        return self._postprocess(samples, [tokens[i] for i in rows], [logprobs[i] for i in rows])

    def _launch(self) -> Launched:
        """The runner's decode step, launched; out of memory, again with half the running samples,
        down to one. A failed step changed no sample's state (its KV writes are rewritten by the
        next one)."""
        while True:
            try:
                return self.runner.launch()
            except torch.OutOfMemoryError:
                running = len(self.scheduler.running)
                if running == 1:
                    s = self.scheduler.running[0]
                    raise InvalidInput(
                        f"out of memory in a decode step with one sample running ({len(s.request.prompt_ids)} "
                        f"prompt + {len(s.token_ids)} new tokens) beside a KV cache of {self._kv_gib():.2f} GiB: "
                        "lower kv_cache_memory to leave room for the step") from None
                release_cached(self.device)
                preempted = self.scheduler.shrink(running // 2)
                self.stats.preemptions += preempted
                logger.warning("out of memory in a decode step of %d samples: running at most %d from now on "
                               "(%d preempted, to resume unchanged)", running, running // 2, preempted)
                self._set_batch()

    def _kv_gib(self) -> float:
        return self.pool.capacity * self._block_bytes / 2**30

    def _new_sample(self, req: Request) -> Sample:
        text = IncrementalText(self.detokenizer, req.prompt, req.params.stop, lazy=not req.stream) \
            if req.params.stop or req.stream else None
        return Sample(req, req.params.sample_index(req.next_sample), text)

    def _start(self, admitted: Admission) -> list[tuple[int, Completion]]:
        """Prefill the admitted prompts, write the samples' slots, rebuild the readmitted ones' KV and
        draw the new ones' first tokens from their prompts' logits."""
        for req in admitted.prefill:
            self._prefill(req)
        self._track_memory()
        self.runner.write_slots(admitted.fresh + admitted.readmitted)
        self.runner.recompute(admitted.readmitted)
        if not admitted.fresh:
            return []
        logits = torch.stack([s.request.last_logits for s in admitted.fresh])
        tokens, logprobs = self.runner.sample_first(admitted.fresh, logits)
        self._keep_top_logprobs(admitted.fresh, range(len(admitted.fresh)))
        return self._postprocess(admitted.fresh, tokens, logprobs)

    def _keep_top_logprobs(self, samples: list[Sample], rows: Sequence[int]) -> None:
        """Each sample's top log-probs from its row of the last step's logits, for the samples that
        ask (vLLM's sampler returns them the same way): no second forward."""
        asking = [(s, row) for s, row in zip(samples, rows) if s.request.params.logprobs]
        if asking:
            k = max(s.request.params.logprobs for s, _ in asking)
            for (s, _), top in zip(asking, self.runner.top_logprobs([row for _, row in asking], k)):
                s.top_logprobs.append(top[:s.request.params.logprobs])

    def _prefill(self, req: Request) -> None:
        """The prompt's KV into its prefix blocks, once for all its samples, and its next-token logits;
        out of memory, once more after freeing the allocator's cache."""
        t0 = time.perf_counter()
        n = len(req.prompt_ids)
        ids = torch.tensor(req.prompt_ids, device=self.device)
        for attempt in range(2):
            try:
                hidden = self.model(ids, torch.arange(n, device=self.device),
                                    PrefillBatch(self.pool, req.prefix_blocks, n))
                req.last_logits = self.model.logits(hidden[-1:])[0]
                break
            except torch.OutOfMemoryError:
                if attempt:
                    raise InvalidInput(f"out of memory in the prefill of a prompt of {n} tokens beside a KV cache "
                                       f"of {self._kv_gib():.2f} GiB: lower kv_cache_memory or shorten the "
                                       "prompt") from None
                hidden = None
                release_cached(self.device)
                logger.warning("out of memory in the prefill of a prompt of %d tokens: trying again", n)
        self.stats.prefill_tokens += n
        self.stats.prefill_seconds += time.perf_counter() - t0

    def _set_batch(self) -> None:
        # request ids grow in admission order, so they sort the rows by prompt group
        self._batch = sorted(self.scheduler.running, key=lambda s: (s.request.request_id, s.slot))
        groups: list[BatchGroup] = []
        last = None
        for s in self._batch:
            if s.request is not last:
                groups.append(BatchGroup([], s.request.prefix_blocks, len(s.request.prompt_ids)))
                last = s.request
            groups[-1].slots.append(s.slot)
        self.runner.set_batch(groups)
        self.scheduler.changed = False

    def _postprocess(self, samples: list[Sample], tokens: list[int], logprobs: list[float]) \
            -> list[tuple[int, Completion]]:
        """Append each sample's token; finish it on EOS, a stop string or its length."""
        finished = []
        for s, token, logprob in zip(samples, tokens, logprobs):
            p = s.request.params
            s.token_ids.append(token)
            s.token_logprobs.append(logprob)
            self.stats.generated_tokens += 1
            if token in self.eos_token_ids and not p.ignore_eos:
                finished.append(self._finish(s, "eos"))
            elif s.text is not None and s.text.add(token):
                finished.append(self._finish(s, "stop"))
            elif len(s.token_ids) >= p.max_new_tokens:
                finished.append(self._finish(s, "length"))
            elif s.request.stream:
                released = s.text.released
                self._deltas.append((s.request.request_id, Delta(
                    s.index, released[s.streamed:], token, logprob,
                    s.top_logprobs[-1] if p.logprobs else None)))
                s.streamed = len(released)
        if self.scheduler.changed:
            self.scheduler.compact()
        return finished

    def _finish(self, s: Sample, reason: str) -> tuple[int, Completion]:
        self.scheduler.release(s)
        req = s.request
        req.live -= 1
        ids = s.token_ids[:-1] if reason == "eos" else s.token_ids  # EOS has no text
        text, kept, stopped = self.detokenizer.settle(req.prompt, ids, req.params.stop, s.text)
        if stopped:  # (kept < len(ids) only for a tokenizer the incremental text got wrong)
            reason, s.token_ids, s.token_logprobs = "stop", s.token_ids[:kept], s.token_logprobs[:kept]
            s.top_logprobs = s.top_logprobs[:kept]
        if req.done:
            self._release(req)
        return req.request_id, Completion(s.index, text, s.token_ids, float(sum(s.token_logprobs)), reason,
                                          s.token_logprobs, s.top_logprobs if req.params.logprobs else None)

    def _release(self, req: Request) -> None:
        if req.prefix_blocks is not None:
            self.scheduler.free_prefix(req)
        req.last_logits = None
        self.requests.pop(req.request_id, None)

    def _track_memory(self) -> None:
        stats = self.stats
        stats.prefix_kv_bytes = max(stats.prefix_kv_bytes, self.scheduler.prefix_blocks * self._block_bytes)
        stats.kv_blocks_peak = max(stats.kv_blocks_peak, self.pool.num_used)
        stats.peak_kv_bytes = stats.kv_blocks_peak * self._block_bytes
