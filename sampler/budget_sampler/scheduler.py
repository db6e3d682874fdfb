"""Which samples hold a slot this step, and the KV blocks they and their prompts hold.

grow: every running sample gets the block its next decode step writes; short of blocks, idle
prompts' prefixes go first, then the most recently started samples are preempted (vLLM's recompute
policy: their blocks are freed, their tokens kept, and they wait at the head of the queue).
admit: waiting samples start in order, preempted ones first, then new ones, while a slot and their
blocks are free; a prompt's prefix blocks are allocated with its first sample (the engine then
prefills them), and when nothing running would ever free blocks, idle prompts' prefixes are taken.
The scheduler runs no model: the engine prefills, recomputes and decodes what it returns.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from .cache import BlockPool, cdiv
from .runner import BlockUpdate
from .sequence import Request, Sample


@dataclass
class Admission:
    """Samples that got a slot: new ones (their first token comes from the prompt's logits) and
    readmitted ones (their KV is recomputed), and the prompts whose prefix blocks need prefilling."""
    fresh: list[Sample] = field(default_factory=list)
    readmitted: list[Sample] = field(default_factory=list)
    prefill: list[Request] = field(default_factory=list)


class Scheduler:
    def __init__(self, pool: BlockPool, max_batch_size: int, requests: dict[int, Request]):
        self.pool, self.requests = pool, requests  # requests: the engine's, in admission order
        self.free_slots = list(range(max_batch_size - 1, -1, -1))
        self.running: list[Sample] = []  # in admission order
        self.waiting: deque[Sample] = deque()  # preempted samples, readmitted before new ones
        self.prefix_blocks = 0  # blocks held by prompts' prefixes
        self.max_running = max_batch_size  # lowered by shrink (out of memory)
        self.changed = False  # the running set changed since the engine last built its batch

    def grow(self, ahead: int = 0) -> tuple[list[BlockUpdate], int]:
        """The block-table updates for running samples that grew into a new block (at suffix
        position len(token_ids) - 1 + ahead: `ahead` tokens are sampled but not appended yet, by a
        step in flight), and how many samples were preempted to make room."""
        bs = self.pool.block_size
        need = [s for s in self.running if len(s.blocks) * bs < len(s.token_ids) + ahead]
        preempted = 0
        while len(need) > self.pool.num_free:
            if not self.reclaim_prefix():
                victim = self.running[-1]
                self._preempt(victim)
                preempted += 1
                need = [s for s in need if s is not victim]
        updates = []
        for s in need:
            s.blocks += self.pool.allocate(1)
            updates.append(BlockUpdate(s.slot, len(s.blocks) - 1, s.blocks[-1]))
        return updates, preempted

    def admit(self, new_sample: Callable[[Request], Sample]) -> Optional[Admission]:
        """Start waiting samples while a slot and their blocks are free; None if none started.
        `new_sample(request)` makes a request's next new sample."""
        admitted = Admission()
        bs = self.pool.block_size
        while self.free_slots and len(self.running) < self.max_running:
            req, sample = self._next_waiting()
            if req is None:
                break
            own = max(1, cdiv(len(sample.token_ids) if sample else 0, bs))  # its suffix blocks
            need = own + (0 if req.prefix_blocks is not None else cdiv(len(req.prompt_ids), bs))
            if need > self.pool.num_free:
                # nothing running will free blocks: take them from idle prompts' prefixes
                if self.running or admitted.fresh or admitted.readmitted or not self.reclaim_prefix(keep=req):
                    break
                continue
            if req.prefix_blocks is None:
                req.prefix_blocks = self.pool.allocate(cdiv(len(req.prompt_ids), bs))
                self.prefix_blocks += len(req.prefix_blocks)
                admitted.prefill.append(req)
            if sample is None:
                sample = new_sample(req)
                req.next_sample += 1
                req.live += 1
                admitted.fresh.append(sample)
            else:
                self.waiting.popleft()
                admitted.readmitted.append(sample)
            sample.blocks = self.pool.allocate(own)
            sample.slot = self.free_slots.pop()
            sample.admissions += 1
            req.running += 1
            self.running.append(sample)
            self.changed = True
        return admitted if admitted.fresh or admitted.readmitted else None

    def _next_waiting(self) -> tuple[Optional[Request], Optional[Sample]]:
        """The next sample to admit: (its request, the preempted sample or None for a new one)."""
        if self.waiting:
            return self.waiting[0].request, self.waiting[0]
        return next(((req, None) for req in self.requests.values() if req.pending), (None, None))

    def release(self, s: Sample) -> None:
        """Free a sample's slot and suffix blocks (it finished, was preempted or aborted); `compact`
        then drops it from the running list."""
        self.pool.free(s.blocks)
        s.blocks = []
        self.free_slots.append(s.slot)
        s.slot = None
        s.request.running -= 1
        self.changed = True

    def compact(self) -> None:
        self.running = [s for s in self.running if s.slot is not None]

    def shrink(self, max_running: int) -> int:
        """Run at most max_running samples from now on: those started last beyond it are preempted,
        as grow does; returns how many."""
        self.max_running = max_running
        excess = self.running[max_running:]
        for s in reversed(excess):
            self._preempt(s)
        return len(excess)

    def _preempt(self, s: Sample) -> None:
        self.release(s)
        self.running.remove(s)
        self.waiting.appendleft(s)

    def abort(self, req: Request) -> None:
        """Drop a request's running and waiting samples."""
        for s in self.running:
            if s.request is req:
                self.release(s)
        self.compact()
        self.waiting = deque(s for s in self.waiting if s.request is not req)

    def reclaim_prefix(self, keep: Optional[Request] = None) -> bool:
        """Free the prefix blocks of the latest prompt that has none of its samples running
        (it is prefilled again when one is admitted); returns whether there was one."""
        for req in reversed(self.requests.values()):
            if req.prefix_blocks is not None and req.running == 0 and req is not keep:
                self.free_prefix(req)
                return True
        return False

    def free_prefix(self, req: Request) -> None:
        self.pool.free(req.prefix_blocks)
        self.prefix_blocks -= len(req.prefix_blocks)
        req.prefix_blocks = None
