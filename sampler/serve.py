"""`budget-sampler serve`: the engine behind an OpenAI-compatible completions API.

The engine is not thread-safe, so one thread (EngineLoop) owns it: it takes add/abort commands from
a queue, runs `engine.step()` while anything is in flight, and hands each finished sample back to
the asyncio side with `call_soon_threadsafe`. HTTP handlers only enqueue and await, so concurrent
requests are decoded together in the same steps, and a request's n samples reach the engine as one
prompt with n samples (its prefix KV is stored once). The wire format lives in
`sampler.integrations.openai_api`; this module is only about serving it.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from .errors import InvalidInput
from .generate_cmd import add_model_arguments
from .integrations.openai_api import (Limits, Prompt, RequestError, completion_response, error_body,
                                      parse_completion_request)
from .params import Completion, SamplingParams

logger = logging.getLogger("sampler.serve")

DISCONNECT_POLL_SECONDS = 0.25
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; only ever logged


class ClientDisconnected(Exception):
    pass


@dataclass
class _InFlight:
    """Engine-thread view of one engine request: where its samples go, and how many are left."""
    rid: int
    loop: asyncio.AbstractEventLoop
    sink: asyncio.Queue
    tag: int
    remaining: int


class EngineLoop:
    """The one thread that may touch the engine. Other threads call `submit` and `abort` only."""

    _STOP = object()

    def __init__(self, sampler):
        self._sampler = sampler
        self._engine = sampler.engine
        self._vocab_size = sampler.config.vocab_size
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._keys = itertools.count()
        self._in_flight: dict[int, _InFlight] = {}  # key -> request; keys are ours, rids the engine's
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._commands.put(self._STOP)
            self._thread.join()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, prompt: Prompt, params: SamplingParams, sink: asyncio.Queue,
               tag: int) -> tuple[int, asyncio.Future]:
        """Queue one prompt with params.n samples; call from the event loop. Each finished sample
        arrives in `sink` as (tag, Completion), or (tag, exception) if the engine failed. The
        returned future resolves to the prompt's token count, or to the InvalidInput that rejected
        it (a value, not a raised exception, so an unawaited one never warns)."""
        loop = asyncio.get_running_loop()
        key, added = next(self._keys), loop.create_future()
        self._commands.put(("add", key, prompt, params, loop, sink, tag, added))
        return key, added

    def abort(self, key: int) -> None:
        """Drop a request's pending and in-flight samples (a no-op once it has finished)."""
        self._commands.put(("abort", key))

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

    def _apply(self, command) -> None:
        if command[0] == "abort":
            request = self._in_flight.pop(command[1], None)
            if request is not None:
                try:
                    self._engine.abort_request(request.rid)
                except Exception:
                    logger.exception("abort of engine request %d failed", request.rid)
            return
        _, key, prompt, params, loop, sink, tag, added = command
        try:
            token_ids = self._sampler.encode(prompt) if isinstance(prompt, str) else prompt
            bad = [t for t in token_ids if t >= self._vocab_size]
            if bad:
                raise RequestError(f"prompt token id {bad[0]} is out of range: the vocabulary has "
                                   f"{self._vocab_size} tokens", param="prompt")
            rid = self._engine.add_request(token_ids, params)
        except Exception as e:  # InvalidInput is the client's to fix; anything else answers 500
            if not isinstance(e, InvalidInput):
                logger.exception("adding a request failed")
            _deliver(loop, _resolve, added, e)
            return
        self._in_flight[key] = _InFlight(rid, loop, sink, tag, params.n)
        _deliver(loop, _resolve, added, len(token_ids))

    def _step(self) -> None:
        try:
            finished = self._engine.step()
        except Exception as e:  # an engine bug must fail its requests, not kill the server
            logger.exception("engine step failed; failing %d in-flight request(s)",
                             len(self._in_flight))
            self._fail_all(e)
            return
        by_rid = {request.rid: key for key, request in self._in_flight.items()}
        for rid, completion in finished:
            key = by_rid.get(rid)
            if key is None:  # aborted after this step began
                continue
            request = self._in_flight[key]
            _deliver(request.loop, request.sink.put_nowait, (request.tag, completion))
            request.remaining -= 1
            if request.remaining == 0:
                del self._in_flight[key]

    def _fail_all(self, error: BaseException) -> None:
        for key, request in list(self._in_flight.items()):
            self._apply(("abort", key))
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


def build_app(sampler, model_id: str, limits: Limits = Limits()) -> FastAPI:
    """The ASGI app. The engine thread starts and stops with the app's lifespan."""
    engine_loop = EngineLoop(sampler)
    tokenizer = sampler.tokenizer

    @asynccontextmanager
    async def lifespan(app):
        engine_loop.start()
        try:
            yield
        finally:
            engine_loop.close()

    app = FastAPI(title="budget-sampler", lifespan=lifespan)
    app.add_middleware(_LogRequests)

    def error(status: int, message: str, param: Optional[str] = None) -> JSONResponse:
        return JSONResponse(error_body(message, status, param), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        if not engine_loop.is_alive():
            return error(503, "the engine thread has stopped")
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": model_id, "object": "model", "created": int(time.time()),
            "owned_by": "budget-sampler",
            "max_model_len": sampler.max_context}]}

    @app.post("/v1/completions")
    async def create_completion(request: Request):
        started = time.perf_counter()
        try:
            body = await _read_json(request, limits.max_body_bytes)
            parsed = parse_completion_request(body, model_id, limits)
            request.state.log_detail = f"prompts={len(parsed.prompts)} n={parsed.params.n}"
            prompt_tokens, completions = await _generate(engine_loop, request, parsed.prompts,
                                                         parsed.params)
        except RequestError as e:
            return error(e.status, str(e), e.param)
        except InvalidInput as e:
            return error(400, str(e))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception:
            logger.exception("completion request failed")
            return error(500, "internal error while generating; see the server log")
        body = completion_response(
            request_id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model_id=model_id,
            completions=completions, prompt_tokens=prompt_tokens, logprobs=parsed.logprobs,
            decode_token=lambda t: tokenizer.decode([t]))
        usage = body["usage"]
        request.state.log_detail += (f" prompt_tokens={usage['prompt_tokens']} completion_tokens="
                                     f"{usage['completion_tokens']} generate_s="
                                     f"{time.perf_counter() - started:.3f}")
        return body

    return app


async def _generate(engine_loop: EngineLoop, request, prompts: list[Prompt],
                    params: SamplingParams) -> tuple[int, list[list[Completion]]]:
    """One engine request per prompt; waits for all n samples of each, aborting all of them if the
    client goes away or anything fails."""
    sink: asyncio.Queue = asyncio.Queue()
    watcher = asyncio.create_task(_watch_disconnect(request, sink))
    keys, finished = [], False
    try:
        acks = []
        for tag, prompt in enumerate(prompts):
            key, added = engine_loop.submit(prompt, params, sink, tag)
            keys.append(key)
            acks.append(added)
        prompt_tokens = 0
        for added in acks:
            outcome = await added
            if isinstance(outcome, BaseException):
                raise outcome
            prompt_tokens += outcome
        completions: list[list[Completion]] = [[] for _ in prompts]
        for _ in range(len(prompts) * params.n):
            tag, outcome = await sink.get()
            if isinstance(outcome, BaseException):
                raise outcome
            completions[tag].append(outcome)
        finished = True
    finally:
        watcher.cancel()
        if not finished:
            for key in keys:
                engine_loop.abort(key)
    for samples in completions:
        samples.sort(key=lambda c: c.index)
    return prompt_tokens, completions


async def _watch_disconnect(request, sink: asyncio.Queue) -> None:
    """Polls the connection while the request waits, however fast its samples are arriving."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
    sink.put_nowait((None, ClientDisconnected()))


async def _read_json(request, limit: int):
    """The body, refused past `limit` bytes whether or not the client declared its length."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body has {declared} bytes; at most {limit} are accepted", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body exceeds {limit} bytes", 413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not valid JSON: {e}") from None


class _LogRequests:
    """ASGI middleware: one log line per HTTP request, with what the handler put in
    `request.state.log_detail` (so failures and disconnects get their line too)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]
        state = scope.setdefault("state", {})

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            client = scope.get("client") or ("-", 0)
            logger.info('%s:%s "%s %s" %d %.3fs %s', client[0], client[1], scope["method"],
                        scope["path"], status[0], time.perf_counter() - started,
                        state.get("log_detail", ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="checkpoint dir, toy name (toy-xs…) or hub id (downloaded)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback; the API has no authentication)")
    parser.add_argument("--port", type=int, default=8000)
    add_model_arguments(parser)
    parser.add_argument("--max-n", type=int, default=Limits.max_n,
                        help="largest n a request may ask for")
    parser.add_argument("--max-tokens", type=int, default=Limits.max_tokens,
                        help="largest max_tokens a request may ask for")
    parser.add_argument("--served-model-name", default=None,
                        help="the model id clients send and /v1/models lists (default: --model)")


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from . import Sampler

    if not 0 <= args.port <= 65535:
        raise InvalidInput(f"--port={args.port} is invalid: must be in [0, 65535]")
    for name in ("max_n", "max_tokens"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: "
                               "must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sampler = Sampler.from_pretrained(args.model, device=args.device, dtype=args.dtype, revision=args.revision,
                                      max_batch_size=args.max_batch_size)
    app = build_app(sampler, args.served_model_name or args.model,
                    Limits(max_n=args.max_n, max_tokens=args.max_tokens))
    if not _is_loopback(args.host):
        logger.warning("binding to %s: anyone who can reach it can use this server (no auth)",
                       args.host)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
