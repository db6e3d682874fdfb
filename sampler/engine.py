"""The generation loop: prefill each prompt once, fan its samples out to slots, decode, sample,
stop, and refill freed slots from pending samples (of the same or the next prompt).

One Engine owns the model, the KV cache and the slots; it is not thread-safe (one thread drives it,
as in nano-vllm: add_request / abort_request / step).
"""
from __future__ import annotations

import random
import time
from typing import Optional

import torch

import kernels

from .cache import PrefillBatch, PrefixPool, SuffixBatch, SuffixCache
from .errors import InvalidInput
from .params import Completion, GenerationStats, SamplingParams
from .sequence import Request, Sample
from .stopping import StopChecker


class Engine:
    def __init__(self, model, tokenizer, eos_token_ids: set[int], max_batch_size: int = 256):
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise InvalidInput(f"max_batch_size={max_batch_size!r} is invalid: must be an integer >= 1")
        self.model, self.tokenizer, self.eos_token_ids = model, tokenizer, eos_token_ids
        weight = model.embed_tokens.weight
        self.device = weight.device
        self.pool = PrefixPool(model.cfg, weight.device, weight.dtype)
        self.suffix = SuffixCache(model.cfg, max_batch_size, weight.device, weight.dtype)
        self.slots: list[Optional[Sample]] = [None] * max_batch_size
        self.requests: dict[int, Request] = {}  # insertion order = admission order
        self.stats = GenerationStats()
        self._next_id = 0

    def add_request(self, prompt_ids: list[int], params: SamplingParams) -> int:
        self.validate(prompt_ids, params)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        rid, self._next_id = self._next_id, self._next_id + 1
        self.requests[rid] = Request(rid, list(prompt_ids), params, seed)
        return rid

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        params.validate()
        if not prompt_ids:
            raise InvalidInput("prompt is empty: it must encode to at least one token")
        vocab = self.model.cfg.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InvalidInput(f"prompt token id {bad} is out of range: the vocabulary has {vocab} tokens")
        limit = self.model.cfg.max_context
        if len(prompt_ids) + params.max_new_tokens > limit:
            raise InvalidInput(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({params.max_new_tokens}) "
                               f"exceeds the model's context of {limit} tokens")

    def abort_request(self, request_id: int) -> None:
        req = self.requests.get(request_id)
        if req is None:
            return
        for i, s in enumerate(self.slots):
            if s is not None and s.request is req:
                self.slots[i] = None
        req.live, req.next_sample = 0, req.params.n
        self._release(req)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    @torch.inference_mode()
    def step(self) -> list[tuple[int, Completion]]:
        """Fill free slots (prefilling new prompts), then run one decode step for all live slots."""
        finished: list[tuple[int, Completion]] = []
        self._fill_slots(finished)
        live = [i for i, s in enumerate(self.slots) if s is not None]
        if live:
            t0 = time.perf_counter()
            self._decode(live, finished)
            self.stats.decode_seconds += time.perf_counter() - t0
            self.stats.decode_steps += 1
        return finished

    def _fill_slots(self, finished) -> None:
        while True:
            free = [i for i, s in enumerate(self.slots) if s is None]
            started = []
            for req in list(self.requests.values()):
                while req.pending and len(started) < len(free):
                    if req.prefix is None:
                        self._prefill(req)
                    p = req.params
                    stop = StopChecker(self.tokenizer, p.stop) if p.stop else None
                    slot = free[len(started)]
                    self.slots[slot] = Sample(req, req.next_sample, stop)
                    req.next_sample += 1
                    req.live += 1
                    started.append(slot)
            if not started:
                return
            # each new sample draws its first token from its prompt's logits (no decode step needed)
            t0 = time.perf_counter()
            logits = torch.stack([self.slots[i].request.last_logits for i in started])
            self._sample(started, logits, finished)
            self.stats.decode_seconds += time.perf_counter() - t0

    def _prefill(self, req: Request) -> None:
        t0 = time.perf_counter()
        n = len(req.prompt_ids)
        req.prefix = self.pool.alloc(n)
        self.suffix.ensure(req.params.max_new_tokens)
        ids = torch.tensor(req.prompt_ids, device=self.device)
        hidden = self.model(ids, torch.arange(n, device=self.device), PrefillBatch(self.pool, req.prefix))
        req.last_logits = self.model.logits(hidden[-1:])[0]
        self.stats.prefill_tokens += n
        self.stats.prefill_seconds += time.perf_counter() - t0
        self._track_memory()

    def _decode(self, live: list[int], finished) -> None:
        order = {rid: k for k, rid in enumerate(self.requests)}
        live.sort(key=lambda i: (order[self.slots[i].request.request_id], i))
        groups: list[list] = []
        for i in live:
            req = self.slots[i].request
            if groups and groups[-1][0] is req:
                groups[-1][1] += 1
            else:
                groups.append([req, 1])
        samples = [self.slots[i] for i in live]
        n_gen = [len(s.token_ids) for s in samples]
        tokens = torch.tensor([s.token_ids[-1] for s in samples], device=self.device)
        positions = torch.tensor([len(s.request.prompt_ids) + k - 1 for s, k in zip(samples, n_gen)],
                                 device=self.device)
        batch = SuffixBatch(self.pool, self.suffix, [(r.prefix, c) for r, c in groups],
                            torch.tensor(live), torch.tensor(n_gen))
        logits = self.model.logits(self.model(tokens, positions, batch))
        self._sample(live, logits, finished)

    def _sample(self, slots: list[int], logits: torch.Tensor, finished) -> None:
        samples = [self.slots[i] for i in slots]
        params = [s.request.params for s in samples]

        def col(values, dtype):
            return torch.tensor(values, dtype=dtype, device=self.device)

        tokens, logprobs = kernels.sample(
            logits, col([p.temperature for p in params], torch.float32), col([p.top_k for p in params], torch.int32),
            col([p.top_p for p in params], torch.float32), col([p.min_p for p in params], torch.float32),
            col([s.request.seed for s in samples], torch.int64), col([s.index for s in samples], torch.int64),
            col([len(s.token_ids) for s in samples], torch.int64))
        for slot, s, p, token, logprob in zip(slots, samples, params, tokens.tolist(), logprobs.tolist()):
            s.token_ids.append(token)
            s.token_logprobs.append(logprob)
            self.stats.generated_tokens += 1
            if token in self.eos_token_ids and not p.ignore_eos:
                self._finish(slot, "eos", finished)
            elif s.stop is not None and s.stop.add(token):
                self._finish(slot, "stop", finished)
            elif len(s.token_ids) >= p.max_new_tokens:
                self._finish(slot, "length", finished)

    def _finish(self, slot: int, reason: str, finished) -> None:
        s = self.slots[slot]
        self.slots[slot] = None
        req = s.request
        req.live -= 1
        text = s.stop.text if reason == "stop" else self.tokenizer.decode(
            s.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        finished.append((req.request_id, Completion(s.index, text, s.token_ids, float(sum(s.token_logprobs)),
                                                    reason, s.token_logprobs)))
        if req.done:
            self._release(req)

    def _release(self, req: Request) -> None:
        if req.prefix is not None:
            self.pool.free(req.prefix)
        req.last_logits = None
        self.requests.pop(req.request_id, None)

    def _track_memory(self) -> None:
        per_token = 2 * self.pool.k[:, :1].numel() * self.pool.k.element_size()
        prefix_bytes = per_token * sum(n for _, n in self.pool.ranges.values())
        self.stats.prefix_kv_bytes = max(self.stats.prefix_kv_bytes, prefix_bytes)
        self.stats.peak_kv_bytes = max(self.stats.peak_kv_bytes, self.pool.nbytes + self.suffix.nbytes)
