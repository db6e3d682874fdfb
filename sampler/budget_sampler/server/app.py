"""The FastAPI app: OpenAI-compatible `/v1/completions` and `/v1/chat/completions` over the engine
thread (engine_loop.py), answered whole or streamed as server-sent events, plus `/health` and
Prometheus `/metrics`.

A stream sends each choice's text as its tokens are decoded (streaming.py: a chunk per token and
choice, coalesced into one write per wake-up), then `data: [DONE]`; comment lines keep an idle
stream alive, which is also how a vanished client is noticed. However the HTTP request ends (done,
failed, timed out, disconnected), its samples still in the engine are aborted. A full queue is a
503 with Retry-After before anything reaches the engine. The access log is off unless asked for, so
a client retrying a bad request in a loop cannot fill the disk.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import InvalidInput
from ..params import Completion, Delta
from ..stopping import Detokenizer
from .engine_loop import Cancelled, EngineLoop, Overloaded
from .metrics import CONTENT_TYPE, ServerMetrics
from .protocol import (
    GenerationRequest,
    Limits,
    PromptInfo,
    RequestError,
    TokensPrompt,
    chat_choice,
    chunk_body,
    completion_body,
    completion_choice,
    error_body,
    parse_chat_request,
    parse_completion_request,
    usage,
)
from .streaming import ChoiceStream

logger = logging.getLogger("budget_sampler.server")

KEEPALIVE_SECONDS = 0.25  # also how often a non-streamed request checks that its client is there
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; only ever logged
RETRY_AFTER_SECONDS = 1  # what a 503 for a full queue tells the client to wait


class ClientDisconnected(Exception):
    pass


def build_app(sampler, model_id: str, limits: Limits = Limits(), access_log: bool = False,
              chat_template: Optional[str] = None) -> FastAPI:
    """The ASGI app. The engine thread starts and stops with the app's lifespan (app.state.engine_loop:
    run.py drains it at shutdown). `chat_template` (serve --chat-template) replaces the tokenizer's,
    or supplies one where it has none."""
    metrics = ServerMetrics(model_id)
    engine_loop = EngineLoop(sampler, metrics, limits)
    tokenizer = sampler.tokenizer

    @asynccontextmanager
    async def lifespan(app):
        engine_loop.start()
        try:
            yield
        finally:
            engine_loop.close()

    app = FastAPI(title="budget-sampler", lifespan=lifespan)
    app.state.engine_loop = engine_loop
    if access_log:
        app.add_middleware(_LogRequests)

    def error(status: int, message: str, param: Optional[str] = None, headers: Optional[dict] = None) -> JSONResponse:
        return JSONResponse(error_body(message, status, param), status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health():
        if not engine_loop.is_alive():
            return error(503, "the engine thread has stopped")
        if engine_loop.draining:
            return error(503, "the server is shutting down")
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": model_id, "object": "model", "created": int(time.time()),
            "owned_by": "budget-sampler", "max_model_len": sampler.max_context}]}

    def render_chat(messages: list[dict]) -> TokensPrompt:
        """The template's own token ids, as apply_chat_template(tokenize=True) gives them (and vLLM
        uses): encoding the text again would add a second BOS where the template writes bos_token.
        return_dict=False: transformers 5 returns a BatchEncoding by default, 4.x a list."""
        if not (chat_template or getattr(tokenizer, "chat_template", None)):
            raise RequestError(f"model {model_id!r} has no chat template (tokenizer_config.json "
                               "chat_template): start the server with --chat-template FILE, or use "
                               "/v1/completions", param="messages")
        kwargs = dict(chat_template=chat_template, add_generation_prompt=True)
        return TokensPrompt(
            prompt_token_ids=tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False,
                                                           **kwargs),
            prompt=tokenizer.apply_chat_template(messages, tokenize=False, **kwargs))

    detokenizer = Detokenizer(tokenizer)  # log-prob token texts, outside the engine thread

    async def serve(request: Request, parse: Callable[[object], GenerationRequest], chat: bool):
        try:
            parsed = parse(await _read_json(request, limits.max_body_bytes))
            request.state.log_detail = f"prompts={len(parsed.prompts)} n={parsed.params.n}"
            run = _Run(engine_loop, request, parsed, limits.request_timeout)
            prompts = await run.start()
        except RequestError as e:
            return error(e.status, str(e), e.param)
        except InvalidInput as e:
            return error(400, str(e))
        except Overloaded as e:
            metrics.rejected.inc()
            return error(503, str(e), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        except Cancelled as e:
            return error(e.status, str(e))
        except Exception:
            logger.exception("adding a request failed")
            return error(500, "internal error while adding the request; see the server log")

        n = parsed.params.n
        meta = dict(request_id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
                    created=int(time.time()), model_id=model_id)
        prompt_tokens = sum(len(p.token_ids) for p in prompts)
        if parsed.stream:  # OpenAI's numbering: choice tag * n + sample index
            streams = [ChoiceStream(tag * n + i, prompt, parsed, detokenizer, chat)
                       for tag, prompt in enumerate(prompts) for i in range(n)]
            return StreamingResponse(_events(run, streams, n, meta, prompt_tokens, parsed.include_usage, chat),
                                     media_type="text/event-stream")
        try:
            finished = [item async for batch in run.batches(watch=True) for item in batch]
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Cancelled as e:
            return error(e.status, str(e))
        except Exception:
            logger.exception("generation failed")
            return error(500, "internal error while generating; see the server log")
        completion_tokens = sum(len(c.token_ids) for _, c in finished)
        request.state.log_detail += f" completion_tokens={completion_tokens}"
        choices = [chat_choice(tag * n + c.index, c, prompts[tag], parsed, detokenizer) if chat else
                   completion_choice(tag * n + c.index, c, prompts[tag], parsed, detokenizer)
                   for tag, c in finished]
        return completion_body(**meta, choices=choices, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens, chat=chat)

    @app.post("/v1/completions")
    async def create_completion(request: Request):
        return await serve(request, lambda body: parse_completion_request(body, model_id, limits),
                           chat=False)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(request: Request):
        return await serve(request, lambda body: parse_chat_request(body, model_id, limits, render_chat),
                           chat=True)

    return app


def load_chat_template(path: str) -> str:
    """`serve --chat-template`: the file's template, compiled as transformers compiles chat templates
    (its own Jinja environment, whose tags a plain one lacks), so a bad file fails at startup
    instead of on every chat request."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        template = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"--chat-template {path!r} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"--chat-template {path!r} is not UTF-8 text: give a Jinja chat "
                           "template file") from None
    if not template.strip():
        raise InvalidInput(f"--chat-template {path!r} is empty: give a Jinja chat template file")
    try:
        _compile_jinja_template(template)
    except TemplateSyntaxError as e:
        raise InvalidInput(f"--chat-template {path!r} is not a valid Jinja template: line "
                           f"{e.lineno}: {e.message}") from None
    return template


class _Run:
    """One HTTP request's engine requests (one per prompt): admitted and submitted by `start`, what
    they produce iterated by `batches`, and whatever is unfinished aborted when `batches` exits."""

    def __init__(self, engine_loop: EngineLoop, request: Request, parsed: GenerationRequest,
                 timeout: Optional[float]):
        self.engine_loop, self.request, self.parsed = engine_loop, request, parsed
        self.sink: asyncio.Queue = asyncio.Queue()
        self.keys: list[int] = []
        self.timeout = timeout
        self.deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout

    async def start(self) -> list[PromptInfo]:
        prompts = len(self.parsed.prompts)
        self.engine_loop.admit(prompts, 0 if self.parsed.prompt_only else prompts * self.parsed.params.n)
        acks = []
        for tag, prompt in enumerate(self.parsed.prompts):
            key, added = self.engine_loop.submit(prompt, self.parsed, self.sink, tag)
            self.keys.append(key)
            acks.append(added)
        infos = [await added for added in acks]
        error = next((i for i in infos if isinstance(i, BaseException)), None)
        if error is not None:
            self.abort()
            raise error
        return infos

    async def batches(self, watch: bool) -> AsyncIterator[list[tuple[int, list[Delta] | Completion]]]:
        """What has arrived since the last batch: (prompt tag, a step's deltas) for a streamed
        request, (prompt tag, Completion) as samples finish, until all have. With `watch`, a task
        polls the client and ClientDisconnected is raised; without, [] comes every KEEPALIVE_SECONDS
        of silence. Past the deadline, Cancelled (504) is raised."""
        watcher = asyncio.create_task(self._watch()) if watch else None
        loop, left, finished = asyncio.get_running_loop(), len(self.keys) * self.parsed.params.n, False
        try:
            while left:
                wait = None if watch else KEEPALIVE_SECONDS
                if self.deadline is not None:
                    if loop.time() >= self.deadline:
                        raise Cancelled(f"the request did not finish within {self.timeout:g} s "
                                        "(--request-timeout); its samples were cancelled", 504)
                    wait = min(wait or math.inf, self.deadline - loop.time())
                try:
                    batch = [await asyncio.wait_for(self.sink.get(), wait)]
                except asyncio.TimeoutError:
                    if not watch:
                        yield []
                    continue
                while not self.sink.empty():
                    batch.append(self.sink.get_nowait())
                for _, outcome in batch:
                    if isinstance(outcome, BaseException):
                        raise outcome
                left -= sum(isinstance(outcome, Completion) for _, outcome in batch)
                yield batch
            finished = True
        finally:
            if watcher is not None:
                watcher.cancel()
            if not finished:
                self.abort()

    async def _watch(self) -> None:
        """Polls the connection however fast samples are arriving."""
        while not await self.request.is_disconnected():
            await asyncio.sleep(KEEPALIVE_SECONDS)
        self.sink.put_nowait((None, ClientDisconnected()))

    def abort(self) -> None:
        for key in self.keys:
            self.engine_loop.abort(key)


async def _events(run: _Run, streams: list[ChoiceStream], n: int, meta: dict, prompt_tokens: int,
                  include_usage: bool, chat: bool) -> AsyncIterator[str]:
    """The server-sent events of a streamed response: each choice's opening chunk, then per
    wake-up the chunks of what arrived, written together."""
    def event(choice: Optional[dict]) -> str:
        return "" if choice is None else _sse(chunk_body(**meta, choices=[choice], chat=chat))

    completion_tokens = 0
    try:
        opening = "".join(event(s.opening()) for s in streams)
        if opening:
            yield opening
        async for batch in run.batches(watch=False):
            if not batch:
                yield ": keep-alive\n\n"
                continue
            out = []
            for tag, item in batch:
                if isinstance(item, Completion):
                    completion_tokens += len(item.token_ids)
                    out.append(event(streams[tag * n + item.index].finish(item)))
                else:
                    out.extend(event(streams[tag * n + d.index].delta(d)) for d in item)
            yield "".join(out)
        if include_usage:
            yield _sse(chunk_body(**meta, choices=[], chat=chat, usage_=usage(prompt_tokens, completion_tokens)))
    except Cancelled as e:
        yield _sse(error_body(str(e), e.status))
    except Exception:
        logger.exception("generation failed while streaming")
        yield _sse(error_body("internal error while generating; see the server log", 500))
    yield "data: [DONE]\n\n"


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


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
    """ASGI middleware (`serve --access-log`): one log line per HTTP request, with what the
    handler put in `request.state.log_detail` (so failures and disconnects get their line too)."""

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
