"""The one thread that may touch the engine, for the server's asyncio handlers.

The engine is not thread-safe, so EngineLoop owns it: it takes add/abort commands from a queue,
runs `engine.step()` while anything is in flight, and hands each finished sample back to the
request's event loop with `call_soon_threadsafe`. Handlers only enqueue and await, so concurrent
requests are decoded together in the same steps, and a prompt's n samples reach the engine as one
request with n samples (its prefix KV is stored once). Teacher-forced log-probs (echo, top
log-probs) are computed here too, since they run the model.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import ContextOverflow, InvalidInput
from ..params import Completion, SamplingParams
from .protocol import Choice, GenerationRequest, Prompt, PromptInfo, RequestError, TokensPrompt

logger = logging.getLogger("sampler.server")


@dataclass
class _InFlight:
    """Engine-thread view of one engine request: where its samples go, and how many are left."""
    rid: int
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue
    tag: int
    remaining: int
    prompt_ids: list[int]
    logprobs: int | None


@dataclass
class _Add:
    key: int
    prompt: Prompt
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue
    tag: int
    added: asyncio.Future


@dataclass
class _Abort:
    key: int


class EngineLoop:
    """Other threads call `submit` and `abort` only."""

    _STOP = object()

    def __init__(self, sampler):
        self._sampler = sampler
        self._engine = sampler.engine
        self._vocab_size = sampler.config.vocab_size
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._keys = itertools.count()
        self._in_flight: dict[int, _InFlight] = {}  # key -> request; keys are ours, rids the engine's
        self._key_of: dict[int, int] = {}  # engine request id -> key, while in flight
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._commands.put(self._STOP)
            self._thread.join()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, prompt: Prompt, request: GenerationRequest, sink: asyncio.Queue,
               tag: int) -> tuple[int, asyncio.Future]:
        """Queue one prompt with request.params.n samples; call from the event loop. Each finished
        sample arrives in `sink` as (tag, Choice), or (tag, exception) if the engine failed. The
        returned future resolves to the prompt's PromptInfo, or to the InvalidInput that rejected
        it (a value, not a raised exception, so an unawaited one never warns)."""
        loop = asyncio.get_running_loop()
        key, added = next(self._keys), loop.create_future()
        self._commands.put(_Add(key, prompt, request, loop, sink, tag, added))
        return key, added

    def abort(self, key: int) -> None:
        """Drop a request's pending and in-flight samples (a no-op once it has finished)."""
        self._commands.put(_Abort(key))

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
                    self._fail_all(RuntimeError("the server is shutting down"))
                    return
                self._apply(command)
            if self._engine.has_unfinished():
                self._step()

    def _apply(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            request = self._forget(command.key)
            if request is not None:
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
            rid, params = self._add(token_ids, request)
        except Exception as e:  # InvalidInput is the client's to fix; anything else answers 500
            if not isinstance(e, InvalidInput):
                logger.exception("adding a request failed")
            _deliver(loop, _resolve, added, e)
            return
        self._in_flight[key] = _InFlight(rid, loop, command.sink, command.tag, params.n, token_ids,
                                         request.logprobs)
        self._key_of[rid] = key
        _deliver(loop, _resolve, added, info)

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
            return self._engine.add_request(token_ids, params), params
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
        return self._engine.add_request(token_ids, params), params

    def _step(self) -> None:
        try:
            finished = self._engine.step()
        except Exception as e:  # an engine bug must fail its requests, not kill the server
            logger.exception("engine step failed; failing %d in-flight request(s)",
                             len(self._in_flight))
            self._fail_all(e)
            return
        for rid, completion in finished:
            key = self._key_of.get(rid)
            if key is None:  # aborted after this step began
                continue
            request = self._in_flight[key]
            _deliver(request.loop, request.sink.put_nowait, (request.tag, self._choice(request, completion)))
            request.remaining -= 1
            if request.remaining == 0:
                self._forget(key)

    def _choice(self, request: _InFlight, completion: Completion) -> Choice | Exception:
        if not request.logprobs:
            return Choice(completion)
        try:
            [scored] = self._sampler.score_top(request.prompt_ids, [completion.token_ids],
                                               request.logprobs)
        except Exception as e:
            logger.exception("top log-probs of a finished sample failed")
            return e
        return Choice(completion, scored.top)

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
