"""The same engine calls on every tensor-parallel rank: rank 0 sends each call, the others replay it.

Every rank owns a whole Engine over its part of the model. Rank 0's ReplicatedEngine stands in for
its Engine (reads go straight to it); each call that changes engine state or runs the model is sent
to the other ranks (broadcast_object_list over a gloo group) and run there by `follow`, in the same
order, so scheduling is identical everywhere. Calls that run the model (step, score) are sent
before rank 0 runs them, since their all-reduces need every rank; calls that only book-keep
(add_request, abort_request) run on rank 0 first, so a rejected one is never sent. Where rank 0
spawned the others, a Watchdog (watchdog.py) watches them during every call that reaches them.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import Optional

import torch.distributed as dist

from ..engine import Engine
from .watchdog import Watchdog


def send(call, group) -> None:
    dist.broadcast_object_list([call], src=0, group=group)


def receive(group):
    box = [None]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


class ReplicatedEngine:
    """Rank 0's engine (an EngineClient): every state-changing call is replayed on the other ranks.
    Each method is explicit, so a new engine method cannot silently run on rank 0 only."""

    def __init__(self, engine: Engine, group, watchdog: Optional[Watchdog] = None):
        self.engine, self.group, self.watchdog = engine, group, watchdog
        self.model, self.tokenizer, self.stats = engine.model, engine.tokenizer, engine.stats  # rank 0's

    def _watching(self, call: str):
        return self.watchdog.watching(call) if self.watchdog else nullcontext()

    @property
    def max_context(self) -> int:
        return self.engine.max_context

    # reads: rank 0 answers alone
    def validate(self, prompt_ids: list[int], params) -> None:
        self.engine.validate(prompt_ids, params)

    def is_active(self, request_id: int) -> bool:
        return self.engine.is_active(request_id)

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def take_deltas(self):
        return self.engine.take_deltas()

    def scheduler_stats(self):
        return self.engine.scheduler_stats()

    def add_request(self, prompt_ids: list[int], params, stream: bool = False) -> int:
        rid = self.engine.add_request(prompt_ids, params, stream)
        # a request without a seed gets a random one: the other ranks must draw with the same key;
        # only rank 0 streams (nobody takes the other ranks' deltas)
        with self._watching("add_request"):
            send(("add_request", (prompt_ids, replace(params, seed=self.engine.requests[rid].seed))), self.group)
        return rid

    def abort_request(self, request_id: int) -> None:
        self.engine.abort_request(request_id)
        with self._watching("abort_request"):
            send(("abort_request", (request_id,)), self.group)

    def step(self):
        with self._watching("step"):
            send(("step", ()), self.group)
            return self.engine.step()

    def score(self, prompt_ids: list[int], completions: list[list[int]], top_k: int = 0):
        with self._watching("score"):
            send(("score", (prompt_ids, completions, top_k)), self.group)
            return self.engine.score(prompt_ids, completions, top_k)


def follow(engine, group) -> None:
    """A rank >= 1: replay rank 0's calls on `engine` until rank 0 closes."""
    while (call := receive(group)) is not None:
        name, args = call
        getattr(engine, name)(*args)
