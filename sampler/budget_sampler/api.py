"""The user-facing Sampler: load a checkpoint, then generate / stream / score many samples."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional, Sequence, Union

import torch

from .engine import Engine, EngineClient
from .errors import InvalidInput, check_context
from .models import check_device, load_hf_config, load_model, parse_dtype, resolve_model_path
from .params import Completion, GenerationStats, SamplingParams
from .scoring import Scored


@dataclass(frozen=True)
class LoadOptions:
    """How every command loads a model (Sampler.from_pretrained's options), as one picklable value: eval
    hands `load` to its Ray actors."""
    device: str = "cpu"
    dtype: str = "float32"
    max_batch_size: int = 256
    kv_cache_memory: Union[None, int, float, str] = None
    cuda_graphs: Optional[bool] = None
    revision: Optional[str] = None
    tensor_parallel: int = 1

    def load(self, name_or_path: str) -> "Sampler":
        """`Sampler.from_pretrained(name_or_path)` with these options."""
        return Sampler.from_pretrained(name_or_path, **asdict(self))


class Sampler:
    """Generate / stream / score over an engine (an Engine, or rank 0's stand-in for the engines of
    all tensor-parallel ranks); `shutdown` stops those ranks."""

    def __init__(self, engine: EngineClient, tokenizer, hf_config, model_path,
                 shutdown: Optional[Callable[[], None]] = None):
        self.engine, self.tokenizer, self.config, self.model_path = engine, tokenizer, hf_config, model_path
        self._shutdown = shutdown
        self._router = Router()  # shared by this Sampler's streams

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype=torch.float32,
                        max_batch_size: int = 256, kv_cache_memory=None, cuda_graphs: Optional[bool] = None,
                        revision: Optional[str] = None, tensor_parallel: int = 1) -> "Sampler":
        """kv_cache_memory: bytes (int), a size ("40GB", "512MiB") or a fraction in (0, 1] of the
        memory left after the weights (default: 0.9 on CUDA, 2 GiB on CPU; see budget_sampler/memory.py).
        cuda_graphs: replay the decode step from CUDA graphs (default: on CUDA).
        revision: a hub id's branch, tag or commit (default: main).
        tensor_parallel: split the model over this many ranks (processes; on CUDA, GPUs cuda:0..N-1),
        started here or by torchrun; see budget_sampler/parallel. close() stops them."""
        path = resolve_model_path(name_or_path, revision)
        dtype = parse_dtype(dtype)
        check_device(device)
        hf_config = load_hf_config(path)
        if tensor_parallel != 1:
            from .parallel.launch import start
            engine, shutdown = start(path, device, dtype, tensor_parallel, max_batch_size, kv_cache_memory,
                                     cuda_graphs)
        else:
            model, shutdown = load_model(path, hf_config, device, dtype), None
            engine = Engine.from_checkpoint(path, hf_config, model, max_batch_size, kv_cache_memory, cuda_graphs)
        return cls(engine, engine.tokenizer, hf_config, path, shutdown)

    def close(self) -> None:
        """Stop the tensor-parallel worker processes, if any (also done at exit); idempotent."""
        if self._shutdown is not None:
            self._shutdown()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def max_context(self) -> int:
        """Prompt + generated tokens the model attends over exactly."""
        return self.engine.max_context

    @property
    def model(self):
        """The model (with tensor parallel: rank 0's part of it)."""
        return self.engine.model

    @property
    def stats(self) -> GenerationStats:
        """Tokens, seconds, tokens/s, KV blocks and preemptions since the Sampler was made (or `stats.reset()`)."""
        return self.engine.stats

    def encode(self, prompt: str) -> list[int]:
        """The prompt's token ids as the engine prefills them (InvalidInput for a non-string or empty prompt)."""
        if not isinstance(prompt, str):
            raise InvalidInput(f"prompt must be a string, got {type(prompt).__name__}")
        ids = self.tokenizer(prompt).input_ids
        if not ids:
            raise InvalidInput("prompt is empty: it must encode to at least one token")
        return ids

    def stream(self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]) \
            -> "SampleStream":
        """params: one SamplingParams for all prompts, or one per prompt (as in vLLM)."""
        prompt_ids = [self.encode(p) for p in _check_prompts(prompts)]
        return self.stream_ids(prompt_ids, _params_per_prompt(params, len(prompt_ids)))

    def stream_ids(self, prompt_ids: list[list[int]], params: list[SamplingParams]) -> "SampleStream":
        """`stream` for prompts given as token ids, one SamplingParams each. Streams of one Sampler
        may be iterated interleaved: each gets its own samples, whichever steps the engine."""
        return SampleStream(self.engine, prompt_ids, params, self._router)

    def generate(self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams],
                 progress: bool = False) -> list[list[Completion]]:
        """All n samples of every prompt, each list sorted by sample index."""
        out: list[list[Completion]] = [[] for _ in _check_prompts(prompts)]
        params = _params_per_prompt(params, len(prompts))
        stream = self.stream(prompts, params)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(p.n for p in params), unit="sample", desc="generate")
        for i, completion in stream:
            out[i].append(completion)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{self.stats.tokens_per_second:,.0f} tok/s")
        if bar is not None:
            bar.close()
        return [sorted(c, key=lambda x: x.index) for c in out]

    def score(self, prompt: str, completions: Sequence[str]) -> list[list[float]]:
        """Per-token log-probs of each completion after the prompt, teacher-forced, with the
        completions tokenized in context (`encode_after`): how a ranker with another vocabulary
        scores a sample's text. A sample's own log-probs are Completion.token_logprobs."""
        return self.score_ids(self.encode(prompt), self.encode_after(prompt, completions))

    def encode_after(self, prompt: str, texts: Sequence[str]) -> list[list[int]]:
        """Each text's ids after the prompt's, tokenized in context as lm-eval does: encode(prompt +
        text) past the length of encode(prompt). Alone, a SentencePiece tokenizer would prepend
        "▁" to the text, and no merge across the prompt's end would be seen."""
        start = len(self.encode(prompt))
        return [self.encode(prompt + text)[start:] if text else [] for text in texts]

    def score_ids(self, prompt_ids: list[int], completions: list[list[int]]) -> list[list[float]]:
        """`score` for a prompt and completions given as token ids."""
        return [s.logprobs for s in self.score_top(prompt_ids, completions, 0)]

    def score_top(self, prompt_ids: list[int], completions: list[list[int]], top_k: int) -> list[Scored]:
        """score_ids, plus the top_k most likely tokens at each position (for top_logprobs)."""
        check_context(len(prompt_ids), max((len(c) for c in completions), default=0), self.max_context,
                      "the longest completion")
        return self.engine.score(prompt_ids, completions, top_k)


class Router:
    """Steps an engine for the streams that share it and hands each finished sample to the stream
    whose request it is (the engine reports the samples of every request in each step)."""

    def __init__(self):
        self.inboxes: dict[int, list[tuple[int, Completion]]] = {}  # request id -> its stream's inbox

    def step(self, engine: EngineClient) -> None:
        finished = engine.step()
        for rid, completion in finished:
            inbox = self.inboxes.get(rid)
            if inbox is not None:  # None: cancelled, or no stream's
                inbox.append((rid, completion))
        for rid in {rid for rid, _ in finished}:
            if not engine.is_active(rid):  # its last sample is delivered
                self.inboxes.pop(rid, None)


class SampleStream:
    """Iterator of (prompt_index, Completion) as samples finish; `cancel(i)` drops prompt i's rest,
    `add(ids, params)` queues one more prompt while it runs."""

    def __init__(self, engine: EngineClient, prompt_ids: list[list[int]], params: list[SamplingParams],
                 router: Optional[Router] = None):
        self.engine, self.prompt_ids = engine, []
        self.router = router if router is not None else Router()
        self.inbox: list[tuple[int, Completion]] = []
        for ids, p in zip(prompt_ids, params):  # validate every prompt before starting any
            engine.validate(ids, p)
        self.request_ids: list[int] = []
        self.index_of: dict[int, int] = {}
        for ids, p in zip(prompt_ids, params):
            self.add(ids, p)

    def add(self, prompt_ids: list[int], params: SamplingParams) -> int:
        """Queue prompt token ids behind those already queued; returns its prompt index."""
        rid = self.engine.add_request(prompt_ids, params)
        self.index_of[rid] = len(self.request_ids)
        self.request_ids.append(rid)
        self.prompt_ids.append(prompt_ids)
        self.router.inboxes[rid] = self.inbox
        return self.index_of[rid]

    def cancel(self, prompt_index: int) -> None:
        """Drop prompt `prompt_index`'s samples that have not finished; the stream yields none of them."""
        rid = self.request_ids[prompt_index]
        self.engine.abort_request(rid)
        self.index_of.pop(rid, None)
        self.router.inboxes.pop(rid, None)

    def close(self) -> None:
        """Cancel every prompt of the stream."""
        for i in list(self.index_of.values()):
            self.cancel(i)

    def steps(self) -> Iterator[list[tuple[int, Completion]]]:
        """The samples each engine step finished (for callers that account time per step)."""
        while self.inbox or any(self.engine.is_active(rid) for rid in self.index_of):
            if not self.inbox:
                self.router.step(self.engine)
            finished = [(self.index_of[rid], c) for rid, c in self.inbox if rid in self.index_of]
            self.inbox.clear()
            if finished:
                yield finished

    def live(self, finished: list[tuple[int, Completion]]) -> Iterator[tuple[int, Completion]]:
        """The samples of one step whose prompt was not cancelled while the step was consumed."""
        return ((i, c) for i, c in finished if self.request_ids[i] in self.index_of)

    def __iter__(self) -> Iterator[tuple[int, Completion]]:
        for finished in self.steps():
            yield from self.live(finished)


def _params_per_prompt(params, count: int) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count or not all(isinstance(p, SamplingParams) for p in params):
        raise InvalidInput(f"params must be one SamplingParams or a list of {count} (one per prompt)")
    return params


def _check_prompts(prompts) -> Sequence[str]:
    if isinstance(prompts, str):
        raise InvalidInput("prompts must be a list of strings, not a single string")
    if not prompts:
        raise InvalidInput("the prompt list is empty")
    return prompts
