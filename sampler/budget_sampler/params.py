"""What a user asks for (SamplingParams) and what the engine hands back (Completion, GenerationStats).

Names and meanings follow vLLM / Hugging Face so that users of either can read them without docs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .errors import InvalidInput

MAX_LOGPROBS = 20  # top log-probs per token at most (vLLM's default --max-logprobs)
TopLogprobs = list[tuple[int, float]]  # one position's (token id, log-prob), most likely first


@dataclass(frozen=True)
class SamplingParams:
    """How to draw the n samples of one prompt; checked once, when made (frozen: `dataclasses.replace`
    makes a checked copy). Sample i's random numbers are keyed by (seed,
    i, step), so `sample_indices` (distinct ints >= 0, len == n) draws exactly the samples with those
    indices of a run that asked for more: a resumed or incremental draw equals an uninterrupted one.
    Default: indices 0 .. n-1."""
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: Optional[int] = None
    ignore_eos: bool = False
    sample_indices: Optional[list[int]] = None
    logprobs: int = 0  # also return each generated token's `logprobs` most likely tokens (vLLM's logprobs)

    def __post_init__(self):
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        object.__setattr__(self, "stop", list(stop or []))
        if self.sample_indices is not None:
            object.__setattr__(self, "sample_indices", list(self.sample_indices))
        self._check()

    def _check(self) -> None:
        def bad(name, value, allowed):
            raise InvalidInput(f"{name}={value!r} is invalid: {allowed}")

        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            bad("n", self.n, "must be an integer >= 1")
        if not _is_number(self.temperature) or self.temperature < 0:
            bad("temperature", self.temperature, "must be a number >= 0 (0 means greedy)")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            bad("top_p", self.top_p, "must be in (0, 1]")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            bad("top_k", self.top_k, "must be an integer >= 0 (0 disables it)")
        if not _is_number(self.min_p) or not 0 <= self.min_p < 1:
            bad("min_p", self.min_p, "must be in [0, 1)")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            bad("max_new_tokens", self.max_new_tokens, "must be an integer >= 1")
        for s in self.stop:
            if not isinstance(s, str) or s == "":
                bad("stop", s, "every stop string must be a non-empty string")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            bad("seed", self.seed, "must be an integer or None")
        if isinstance(self.logprobs, bool) or not isinstance(self.logprobs, int) \
                or not 0 <= self.logprobs <= MAX_LOGPROBS:
            bad("logprobs", self.logprobs, f"must be an integer in [0, {MAX_LOGPROBS}]")
        if self.sample_indices is not None:
            ints = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.sample_indices)
            if not ints or len(set(self.sample_indices)) != len(self.sample_indices):
                bad("sample_indices", self.sample_indices, "must be distinct integers >= 0")
            if len(self.sample_indices) != self.n:
                bad("sample_indices", self.sample_indices, f"must hold n={self.n} indices (one per sample)")

    def sample_index(self, k: int) -> int:
        """The index of the k-th sample started (k = 0 .. n-1)."""
        return k if self.sample_indices is None else self.sample_indices[k]


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Completion:
    """One finished sample. `logprob` sums the chosen tokens' log-probs under the model's
    unmodified distribution (temperature 1, no truncation): what a likelihood ranker needs."""
    index: int
    text: str
    token_ids: list[int]
    logprob: float
    finish_reason: str  # "stop" | "eos" | "length"
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: Optional[list[TopLogprobs]] = None  # per token, with params.logprobs > 0

    @property
    def mean_logprob(self) -> float:
        """The mean per-token log-prob: the score of `eval --ranker self`."""
        return mean_logprob(self.token_logprobs)


@dataclass
class Delta:
    """What one step added to a running sample of a streamed request (Engine.take_deltas): its new
    token and the text released with it, '' while text is held back at a possible stop string or
    an incomplete character. A sample's deltas, then its Completion's text past them, join to the
    Completion's text."""
    index: int
    text: str
    token_id: int
    logprob: float
    top_logprobs: Optional[TopLogprobs] = None


@dataclass
class SchedulerStats:
    """The engine's queues and KV pool right now (the server's /metrics and backpressure)."""
    running_requests: int = 0  # with a sample holding a slot
    waiting_requests: int = 0  # in the engine, none of its samples holding a slot
    running_samples: int = 0
    waiting_samples: int = 0   # not started, or preempted
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0


def mean_logprob(logprobs: list[float]) -> float:
    """The likelihood ranker's score: the mean per-token log-prob (0 for no tokens)."""
    return sum(logprobs) / max(len(logprobs), 1)


_PER_ENGINE = ("peak_kv_bytes", "prefix_kv_bytes", "kv_blocks_total", "kv_blocks_peak")


@dataclass
class GenerationStats:
    """Counters since the Sampler was made (or `reset()`), for throughput and budget accounting."""
    prefill_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_steps: int = 0
    peak_kv_bytes: int = 0
    prefix_kv_bytes: int = 0
    kv_blocks_total: int = 0  # the pool's size: kept by reset()
    kv_blocks_peak: int = 0
    preemptions: int = 0

    @property
    def seconds(self) -> float:
        """Prefill plus decode seconds."""
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens over `seconds` (0 before any)."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def reset(self) -> None:
        """Zero the counters; the pool's size `kv_blocks_total` is kept."""
        for name, value in GenerationStats(kv_blocks_total=self.kv_blocks_total).__dict__.items():
            setattr(self, name, value)

    def add(self, other: "GenerationStats") -> None:
        """Fold in the counters of another engine or session (data parallel): tokens, seconds, steps
        and preemptions add up; pool sizes and peaks take the larger, since each engine has a pool
        of its own (the largest one engine needed, not a sum over engines that peak apart)."""
        for name, value in other.__dict__.items():
            mine = getattr(self, name)
            setattr(self, name, max(mine, value) if name in _PER_ENGINE else mine + value)

    def as_dict(self) -> dict:
        """The counters with `seconds` and `tokens_per_second`, as a JSON-ready dict."""
        d = dict(self.__dict__)
        d["seconds"] = self.seconds
        d["tokens_per_second"] = self.tokens_per_second
        return d
