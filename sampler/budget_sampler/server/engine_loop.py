"""The one thread that may touch the engine, for the server's asyncio handlers.

The engine is not thread-safe, so EngineLoop owns it: it takes add/abort commands from a queue,
runs `engine.step()` while anything is in flight, and hands each step's results back to the
request's event loop with `call_soon_threadsafe`: a streamed request's new tokens (the engine's
deltas, one batch per request per step), then its finished samples. Handlers only enqueue and
await, so concurrent requests are decoded together in the same steps, and a prompt's n samples
reach the engine as one request with n samples (its prefix KV is stored once). A prompt's
teacher-forced log-probs (echo) are computed here too, since they run the model; a generated
token's top log-probs come from its own decode step (SamplingParams.logprobs), as in vLLM.

Backpressure: `admit` refuses a request (Overloaded) when the queue (requests and samples accepted
but not decoding yet) would pass its bounds; `drain` and `cancel_all` are the graceful shutdown.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import ContextOverflow, InvalidInput
from ..params import Completion, SamplingParams, SchedulerStats
from .metrics import ServerMetrics
from .protocol import GenerationRequest, Limits, Prompt, PromptInfo, RequestError, TokensPrompt

logger = logging.getLogger("budget_sampler.server")


class Overloaded(Exception):
    """The queue is full: answer 503 with Retry-After."""


class Cancelled(Exception):
    """The server ended a request before its samples finished; `status` is the HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class _InFlight:
    """Engine-thread view of one engine request: where its samples go, and how many are left."""
    rid: int
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue
    tag: int
    remaining: int
    arrival: float  # time.perf_counter() when the handler submitted it
    stream: bool
    last_token: Optional[float] = None  # when a step last gave it tokens (streamed requests)


@dataclass
class _Add:
    key: int
    prompt: Prompt
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue
    tag: int
    added: asyncio.Future
    arrival: float


@dataclass
class _Abort:
    key: int


@dataclass
class _FailAll:
    error: BaseException


class EngineLoop:
    """Other threads call `admit`, `submit`, `abort`, `drain` and `cancel_all` only."""

    _STOP = object()

    def __init__(self, sampler, metrics: ServerMetrics, limits: Limits = Limits()):
        self._sampler, self.metrics, self._limits = sampler, metrics, limits
        self._engine = sampler.engine
        self._vocab_size = sampler.config.vocab_size
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._keys = itertools.count()
        self._in_flight: dict[int, _InFlight] = {}  # key -> request; keys are ours, rids the engine's
        self._key_of: dict[int, int] = {}  # engine request id -> key, while in flight
        # the queue as admit sees it: the engine's after the last step, plus what is not added yet
        self._lock = threading.Lock()
        self._queued = SchedulerStats()
        self._unapplied = [0, 0]  # requests, samples submitted and not yet applied
        self.draining = False
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._commands.put(self._STOP)
            self._thread.join()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def admit(self, prompts: int, samples: int) -> None:
        """Reserve queue room for a request of `prompts` prompts and `samples` samples in all, or
        raise Overloaded (or Cancelled while shutting down); call before its `submit`s. A request
        that finds the queue empty is admitted whatever its size, so none is refused forever."""
        limits = self._limits
        with self._lock:
            if self.draining:
                raise Cancelled("the server is shutting down", 503)
            requests = self._queued.waiting_requests + self._unapplied[0]
            queued = self._queued.waiting_samples + self._unapplied[1]
            if requests and requests + prompts > limits.max_queued_requests:
                raise Overloaded(f"the server is overloaded: {requests} requests are queued "
                                 f"(--max-queued-requests {limits.max_queued_requests}); retry later")
            if queued and queued + samples > limits.max_queued_samples:
                raise Overloaded(f"the server is overloaded: {queued} samples are queued "
                                 f"(--max-queued-samples {limits.max_queued_samples}); retry later")
            self._unapplied[0] += prompts
            self._unapplied[1] += samples

    def submit(self, prompt: Prompt, request: GenerationRequest, sink: asyncio.Queue,
               tag: int) -> tuple[int, asyncio.Future]:
        """Queue one prompt with request.params.n samples; call from the event loop after `admit`.
        `sink` gets (tag, list of Delta) per step for a streamed request, (tag, Completion) per
        finished sample, or (tag, exception) if the engine failed. The returned future resolves to
        the prompt's PromptInfo, or to the InvalidInput that rejected it (a value, not a raised
        exception, so an unawaited one never warns)."""
        loop = asyncio.get_running_loop()
        key, added = next(self._keys), loop.create_future()
        self._commands.put(_Add(key, prompt, request, loop, sink, tag, added, time.perf_counter()))
        return key, added

    def abort(self, key: int) -> None:
        """Drop a request's pending and in-flight samples (a no-op once it has finished)."""
        self._commands.put(_Abort(key))

    def drain(self) -> None:
        """Refuse new requests (shutdown has begun); those in flight go on."""
        with self._lock:
            self.draining = True

    def cancel_all(self) -> None:
        """End every request in flight with a 503 (the shutdown timeout has passed)."""
        self._commands.put(_FailAll(Cancelled("the server is shutting down: the request was cancelled "
                                              "when the shutdown timeout passed", 503)))

    def _run(self) -> None:
        while True:
            commands = []
            try:  # wait for a command only when there is nothing to step
                commands.append(self._commands.get(block=not self._engine.has_unfinished()))
                while True:
                    commands.append(self._commands.get_nowait())
            except queue.Empty:
                pass
            for command in commands:
                if command is self._STOP:
                    self._fail_all(Cancelled("the server is shutting down", 503))
                    return
                self._apply(command)
            if self._engine.has_unfinished():
                self._step()
            added = [c for c in commands if isinstance(c, _Add)]
            with self._lock:  # one update, so admit never sees an added request twice or not at all
                self._queued = self._engine.scheduler_stats()
                self._unapplied[0] -= len(added)
                self._unapplied[1] -= sum(c.request.params.n * (not c.request.prompt_only) for c in added)
            self.metrics.update(self._queued, self._engine.stats)

    def _apply(self, command: _Add | _Abort | _FailAll) -> None:
        if isinstance(command, _FailAll):
            self._fail_all(command.error)
            return
        if isinstance(command, _Abort):
            request = self._forget(command.key)
            if request is not None:
                self.metrics.finished["abort"].inc(request.remaining)
                try:
                    self._engine.abort_request(request.rid)
                except Exception:
                    logger.exception("abort of engine request %d failed", request.rid)
            return
        key, prompt, request, loop, added = command.key, command.prompt, command.request, command.loop, command.added
        try:
            token_ids = (self._sampler.encode(prompt) if isinstance(prompt, str) else
                         list(prompt.prompt_token_ids) if isinstance(prompt, TokensPrompt) else list(prompt))
            info = self._prompt_info(prompt, token_ids, request)
            if request.prompt_only:
                self._score_only(command, token_ids, info)
                return
            rid, params = self._add(token_ids, request)
        except Exception as e:  # InvalidInput is the client's to fix; anything else answers 500
            if not isinstance(e, InvalidInput):
                logger.exception("adding a request failed")
            _deliver(loop, _resolve, added, e)
            return
        self._in_flight[key] = _InFlight(rid, loop, command.sink, command.tag, params.n, command.arrival,
                                         request.stream)
        self._key_of[rid] = key
        _deliver(loop, _resolve, added, info)

    def _score_only(self, command: _Add, token_ids: list[int], info: PromptInfo) -> None:
        """max_tokens=0 with echo: the prompt (and its log-probs) is the whole answer, so each of
        the n choices is finished at once with no tokens."""
        n, scored = command.request.params.n, command.request.logprobs is not None
        _deliver(command.loop, _resolve, command.added, info)
        for i in range(n):
            done = Completion(i, "", [], 0.0, "length", [], [] if scored else None)
            _deliver(command.loop, command.sink.put_nowait, (command.tag, done))
        if scored:
            self.metrics.counters["prompt_tokens"].inc(len(token_ids))
        self.metrics.finished["length"].inc(n)
        self.metrics.e2e_request_latency.observe(time.perf_counter() - command.arrival)

    def _forget(self, key: int) -> Optional[_InFlight]:
        request = self._in_flight.pop(key, None)
        if request is not None:
            del self._key_of[request.rid]
        return request

    def _prompt_info(self, prompt: Prompt, token_ids: list[int], request: GenerationRequest) -> PromptInfo:
        bad = [t for t in token_ids if t >= self._vocab_size]
        if bad:
            raise RequestError(f"prompt token id {bad[0]} is out of range: the vocabulary has "
                               f"{self._vocab_size} tokens", param="prompt")
        text = (prompt if isinstance(prompt, str) else prompt.prompt if isinstance(prompt, TokensPrompt)
                else self._sampler.tokenizer.decode(token_ids))
        info = PromptInfo(token_ids, text)
        if request.echo and request.logprobs is not None:
            [scored] = self._sampler.score_top(token_ids[:1], [token_ids[1:]], request.logprobs)
            info.logprobs, info.top = scored.logprobs, scored.top
        return info

    def _add(self, token_ids: list[int], request: GenerationRequest) -> tuple[int, SamplingParams]:
        """The engine request and its params. When the engine finds that the prompt + max_tokens
        overflow the context, max_tokens is lowered to what the context leaves if the request
        allows it; otherwise the error names the field (and lm-eval's flag) to lower."""
        params, field = request.params, request.max_tokens_field
        try:
            return self._engine.add_request(token_ids, params, stream=request.stream), params
        except ContextOverflow as e:
            if e.room < 1:
                raise RequestError(f"the prompt has {e.prompt_tokens} tokens and the model's context is "
                                   f"{e.max_context}: shorten it (lm-eval: --model_args max_length="
                                   f"{e.max_context})", param="prompt") from None
            if not request.clip_max_tokens:
                raise RequestError(f"prompt ({e.prompt_tokens} tokens) + {field} ({e.new_tokens}) exceeds the "
                                   f"model's context of {e.max_context} tokens: lower {field} to at most "
                                   f"{e.room} (lm-eval: --gen_kwargs max_gen_toks={e.room}), or start the "
                                   "server with --clip-max-tokens", param=field) from None
            params = replace(params, max_new_tokens=e.room)
        return self._engine.add_request(token_ids, params, stream=request.stream), params

    def _step(self) -> None:
        try:
            finished = self._engine.step()
            deltas = self._engine.take_deltas()
        except Exception as e:  # an engine bug must fail its requests, not kill the server
            logger.exception("engine step failed; failing %d in-flight request(s)",
                             len(self._in_flight))
            self._fail_all(e)
            return
        now, got = time.perf_counter(), {}  # key -> this step's deltas
        for rid, delta in deltas:
            key = self._key_of.get(rid)
            if key is not None:  # None: aborted after this step began
                got.setdefault(key, []).append(delta)
        for key in got.keys() | {self._key_of.get(rid) for rid, _ in finished} - {None}:
            self._observe_tokens(self._in_flight[key], now)
        for key, batch in got.items():
            request = self._in_flight[key]
            _deliver(request.loop, request.sink.put_nowait, (request.tag, batch))
        for rid, completion in finished:
            key = self._key_of.get(rid)
            if key is None:
                continue
            request = self._in_flight[key]
            _deliver(request.loop, request.sink.put_nowait, (request.tag, completion))
            self.metrics.finished[completion.finish_reason].inc()
            request.remaining -= 1
            if request.remaining == 0:
                self.metrics.e2e_request_latency.observe(now - request.arrival)
                self._forget(key)

    def _observe_tokens(self, request: _InFlight, now: float) -> None:
        """A step gave the request tokens: its time to first token, or the latency since its last."""
        if not request.stream:  # its tokens are not reported as they are made
            return
        if request.last_token is None:
            self.metrics.time_to_first_token.observe(now - request.arrival)
        else:
            self.metrics.inter_token_latency.observe(now - request.last_token)
        request.last_token = now

    def _fail_all(self, error: BaseException) -> None:
        for key, request in list(self._in_flight.items()):
            self._apply(_Abort(key))
            _deliver(request.loop, request.sink.put_nowait, (request.tag, error))


def _deliver(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """Run callback(*args) on the request's event loop."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # that event loop has closed: nobody is waiting any more
        pass


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():  # a handler cancelled at shutdown no longer waits for it
        future.set_result(value)
