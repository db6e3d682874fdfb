"""State of one request (a prompt and its n samples) and of one sample while it runs or waits."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .params import SamplingParams, TopLogprobs
from .stopping import IncrementalText, PromptText


@dataclass
class Request:
    request_id: int
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    prompt: PromptText            # the prompt's text and the window that primes its samples' text
    next_sample: int = 0          # samples started (params.sample_index maps it to an index)
    live: int = 0                 # samples started and not finished (running or preempted)
    running: int = 0              # samples holding a slot now
    prefix_blocks: Optional[list[int]] = None  # the prompt's KV blocks once prefilled
    last_logits: Optional[torch.Tensor] = None  # the prompt's next-token logits [vocab]
    stream: bool = False          # report each step's new token and text (Engine.take_deltas)

    @property
    def pending(self) -> int:
        return self.params.n - self.next_sample

    @property
    def done(self) -> bool:
        return self.pending == 0 and self.live == 0


@dataclass
class Sample:
    request: Request
    index: int
    text: Optional[IncrementalText]   # with stop strings: the text so far, to search them
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)  # with params.logprobs > 0
    slot: Optional[int] = None        # while running
    blocks: list[int] = field(default_factory=list)  # its suffix KV blocks while running
    streamed: int = 0                 # characters of its text a stream has been given
    admissions: int = 0               # times it got a slot: a step launched before the last one is not its own
