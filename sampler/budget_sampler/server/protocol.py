"""The OpenAI wire format (completions and chat completions, as vLLM's server speaks it): a request
body in, a GenerationRequest out; finished samples in, response bodies and stream chunks out.

Pure functions with no HTTP in them, so the app is only about serving and the schema can be tested
on plain dicts. Every field is checked here (type, range, the server's upper bounds); a bad one
raises RequestError naming the field and what is allowed. Fields that cannot change the samples
are accepted and ignored; fields that would change them and that we do not implement are refused
unless they hold their neutral value, so a client never gets silently different results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

from ..errors import InvalidInput
from ..params import Completion, SamplingParams, TopLogprobs
from ..stopping import PRIME_TOKENS, Detokenizer


@dataclass(frozen=True)
class TokensPrompt:
    """A prompt already tokenized, with its text (vLLM's TokensPrompt): a rendered chat, whose
    template writes any special tokens itself, so the engine gets exactly these ids."""
    prompt_token_ids: list[int]
    prompt: str


Prompt = Union[str, list[int], TokensPrompt]

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
SAMPLING_FIELDS = ("model", "n", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop",
                   "seed", "stream", "stream_options", "ignore_eos")
COMPLETION_FIELDS = SAMPLING_FIELDS + ("prompt", "logprobs", "echo")
CHAT_FIELDS = SAMPLING_FIELDS + ("messages", "logprobs", "top_logprobs", "max_completion_tokens")
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "prompt_cache_key",
                  "safety_identifier", "parallel_tool_calls")  # cannot change what is sampled
NEUTRAL_VALUES = {  # unsupported fields, accepted only at the value that leaves sampling unchanged
    "presence_penalty": (0,), "frequency_penalty": (0,), "repetition_penalty": (1,),
    "length_penalty": (1,), "logit_bias": ({},), "suffix": ("",), "use_beam_search": (False,),
    "min_tokens": (0,), "stop_token_ids": ([],), "bad_words": ([],), "tools": ([],),
    "tool_choice": ("none", "auto"), "response_format": ({"type": "text"},),
    "include_stop_str_in_output": (False,), "skip_special_tokens": (True,),
}


class RequestError(InvalidInput):
    """A request the client must fix; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, param: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass(frozen=True)
class Limits:
    """The server's upper bounds, so one request cannot take the machine."""
    max_n: int = 1024
    max_tokens: int = 4096
    max_prompts: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    clip_max_tokens: bool = False  # lower max_tokens to what the context leaves instead of a 400
    # backpressure: a request that would queue more than these (beyond an empty queue) gets a 503
    max_queued_requests: int = 1024  # prompts accepted, none of their samples decoding yet
    max_queued_samples: int = 65536  # samples not started yet (or preempted)
    request_timeout: Optional[float] = None  # seconds from arrival to the last sample; None: no limit


@dataclass
class GenerationRequest:
    """What either endpoint asks of the engine: one engine request (n samples) per prompt."""
    prompts: list[Prompt]  # a token-id list is used as is; chat: the rendered chat
    params: SamplingParams
    logprobs: Optional[int] = None  # None: no log-probs; k: the chosen token's and the k best
    echo: bool = False             # prepend the prompt (and its log-probs) to each choice
    stream: bool = False
    include_usage: bool = False    # stream_options.include_usage: a last chunk with usage
    max_tokens_field: str = "max_tokens"  # the field an error about the context should name
    clip_max_tokens: bool = False  # max_tokens may be lowered to fit the context
    prompt_only: bool = False      # max_tokens=0 with echo: score the prompt, generate nothing
                                   # (params.max_new_tokens is then 1, unused)


@dataclass
class PromptInfo:
    """A prompt as the engine saw it; log-probs only when echo asks for them."""
    token_ids: list[int]
    text: str
    logprobs: Optional[list[float]] = None  # of token_ids[1:], each given the tokens before it
    top: Optional[list[TopLogprobs]] = field(default=None)


def parse_completion_request(body, model_id: str, limits: Limits) -> GenerationRequest:
    """`/v1/completions`. `max_tokens` defaults to 16, as in the OpenAI API; 0 with echo scores
    the prompt alone (the classic way to get a prompt's log-probs from a completions server)."""
    get = _fields(body, COMPLETION_FIELDS, model_id)
    max_tokens = _int(get, "max_tokens", 16, 0, limits.max_tokens)
    echo = _bool(get, "echo", False)
    if max_tokens == 0 and not echo:
        raise RequestError("max_tokens=0 is invalid without echo=true: it must be in [1, "
                           f"{limits.max_tokens}], or 0 with echo=true to score the prompt alone",
                           param="max_tokens")
    request = _sampling(get, limits, max_tokens or 1, "max_tokens")
    request.prompts = _prompts(get("prompt"), limits.max_prompts)
    request.echo, request.prompt_only = echo, max_tokens == 0
    _set_logprobs(request, _int(get, "logprobs", None, 0, MAX_LOGPROBS))
    return request


def parse_chat_request(body, model_id: str, limits: Limits,
                       render: Callable[[list[dict]], TokensPrompt]) -> GenerationRequest:
    """`/v1/chat/completions`; `render` applies the chat template. Without
    max_completion_tokens or max_tokens, a reply may fill the context (vLLM's default)."""
    get = _fields(body, CHAT_FIELDS, model_id)
    name = "max_completion_tokens" if get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(get, name, None, 1, limits.max_tokens)
    request = _sampling(get, limits, max_tokens or limits.max_tokens, name)
    request.clip_max_tokens |= max_tokens is None
    request.prompts = [render(_messages(get("messages")))]
    top = _int(get, "top_logprobs", None, 0, MAX_LOGPROBS)
    if _bool(get, "logprobs", False):
        _set_logprobs(request, top or 0)
    elif top:
        raise RequestError("top_logprobs needs logprobs=true", param="top_logprobs")
    return request


def _set_logprobs(request: GenerationRequest, logprobs: Optional[int]) -> None:
    """The engine returns each generated token's top log-probs from its decode step (as vLLM's)."""
    request.logprobs = logprobs
    request.params = replace(request.params, logprobs=logprobs or 0)


def completion_body(*, request_id: str, created: int, model_id: str, choices: Sequence[dict],
                    prompt_tokens: int, completion_tokens: int, chat: bool) -> dict:
    return {"id": request_id, "object": "chat.completion" if chat else "text_completion",
            "created": created, "model": model_id,
            "choices": sorted(choices, key=lambda c: c["index"]),
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk_body(*, request_id: str, created: int, model_id: str, choices: list[dict], chat: bool,
               usage_: Optional[dict] = None) -> dict:
    """One server-sent event's data; the last one of a stream carries usage and no choices."""
    body = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": model_id, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return body


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_choice(index: int, c: Completion, prompt: PromptInfo, request: GenerationRequest,
                      detokenizer: Detokenizer) -> dict:
    """A `text_completion` choice. With echo the prompt's tokens come first and the first of them
    has no log-prob, as in vLLM. The tokens' texts join to the choice's text."""
    text = prompt.text + c.text if request.echo else c.text
    logprobs = None
    if request.logprobs is not None:
        ids, lps, tokens = list(c.token_ids), list(c.token_logprobs), _token_texts(detokenizer, prompt, c)
        tops, context = c.top_logprobs or [[]] * len(ids), prompt.token_ids
        if request.echo:
            tokens = prompt_token_texts(detokenizer, prompt) + tokens
            ids, context = prompt.token_ids + ids, []
            lps = [None] + prompt.logprobs + lps
            tops = [None] + (prompt.top or [[]] * len(prompt.logprobs)) + tops
        logprobs = completion_logprobs(tokens, lps, tops, alternatives(detokenizer, context + ids),
                                       len(context))
    return {"index": index, "text": text, "logprobs": logprobs,
            "finish_reason": finish_reason(c)}


def completion_logprobs(tokens: list[str], lps: list, tops: list, alternative: Callable[[int, int], str],
                        position: int, offset: int = 0) -> dict:
    """A completion choice's `logprobs` for tokens at positions `position`, `position + 1`, ... of
    the ids `alternative` reads, the first starting at `offset` of the text: per token the chosen
    one and its alternatives keyed by text, and text_offset, where each token starts."""
    top_logprobs = [None if lp is None else {**{alternative(position + i, t): v for t, v in top}, tokens[i]: lp}
                    for i, (lp, top) in enumerate(zip(lps, tops))]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": top_logprobs, "text_offset": offsets}


def chat_choice(index: int, c: Completion, prompt: PromptInfo, request: GenerationRequest,
                detokenizer: Detokenizer) -> dict:
    """A `chat.completion` choice. The tokens' texts join to the content."""
    logprobs = None
    if request.logprobs is not None:
        logprobs = chat_logprobs(_token_texts(detokenizer, prompt, c), c.token_logprobs,
                                 c.top_logprobs or [[]] * len(c.token_ids),
                                 alternatives(detokenizer, prompt.token_ids + c.token_ids), len(prompt.token_ids))
    return {"index": index, "message": {"role": "assistant", "content": c.text}, "logprobs": logprobs,
            "finish_reason": finish_reason(c)}


def chat_logprobs(tokens: list[str], lps: list[float], tops: list, alternative: Callable[[int, int], str],
                  position: int) -> dict:
    """A chat choice's `logprobs` for tokens at positions `position`, `position + 1`, ... of the ids
    `alternative` reads: per token `{token, logprob, bytes, top_logprobs}`, `bytes` its UTF-8."""
    return {"content": [dict(_chat_token(token, lp), top_logprobs=[_chat_token(alternative(position + i, t), v)
                                                                   for t, v in top])
                        for i, (token, lp, top) in enumerate(zip(tokens, lps, tops))]}


def prompt_token_texts(detokenizer: Detokenizer, prompt: PromptInfo) -> list[str]:
    """Each prompt token's share of the prompt's text (echo)."""
    return detokenizer.token_texts(detokenizer.prompt([]), prompt.token_ids, prompt.text)


def _token_texts(detokenizer: Detokenizer, prompt: PromptInfo, c: Completion) -> list[str]:
    """Each generated token's share of the completion's text; a partial character goes to the
    token that completes it, and a stop string's tokens keep only what precedes the stop."""
    return detokenizer.token_texts(detokenizer.prompt(prompt.token_ids), list(c.token_ids), c.text)


def alternatives(detokenizer: Detokenizer, ids: list[int]) -> Callable[[int, int], str]:
    """text(position, token id): what a top log-prob's token would have added at that position of
    `ids`, decoded after the few tokens before it (alone, a SentencePiece token loses its space)."""
    return lambda i, token_id: detokenizer.token_text(ids[max(0, i - PRIME_TOKENS):i], token_id)


def finish_reason(c: Completion) -> str:
    """Our "eos" is OpenAI's "stop" (OpenAI has only stop and length)."""
    return "length" if c.finish_reason == "length" else "stop"


def error_body(message: str, status: int, param: Optional[str] = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _chat_token(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _fields(body, supported: tuple[str, ...], model_id: str):
    """The body's non-null fields as a getter, after refusing unknown and result-changing ones."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    given = {k: v for k, v in body.items() if v is not None}
    unsupported = sorted(k for k, v in given.items() if k not in supported + IGNORED_FIELDS and not (
        k in NEUTRAL_VALUES and v in NEUTRAL_VALUES[k]) and not (k == "best_of" and v == body.get("n", 1)))
    if unsupported:
        raise RequestError(f"unsupported field(s) {', '.join(map(repr, unsupported))}: they would "
                           f"change the samples; supported: {', '.join(supported)}",
                           param=unsupported[0])
    model = given.get("model")
    if model is not None and model != model_id:
        raise RequestError(f"model={model!r} is not served here; this server serves {model_id!r}",
                           status=404, param="model")
    return given.get


def _sampling(get, limits: Limits, max_tokens: int, max_tokens_field: str) -> GenerationRequest:
    top_k = _int(get, "top_k", 0, -1, None)
    params = SamplingParams(
        n=_int(get, "n", 1, 1, limits.max_n),
        temperature=_float(get, "temperature", 1.0, 0.0, 2.0, "in [0, 2] (0 means greedy)"),
        top_p=_float(get, "top_p", 1.0, 0.0, 1.0, "in (0, 1]", low_open=True),
        top_k=max(top_k, 0),  # vLLM's -1 and our 0 both mean "no top-k"
        min_p=_float(get, "min_p", 0.0, 0.0, 1.0, "in [0, 1)", high_open=True),
        max_new_tokens=max_tokens,
        stop=_stop(get("stop")),
        seed=_int(get, "seed", None, 0, 2**63 - 1),
        ignore_eos=_bool(get, "ignore_eos", False),
    )
    stream = _bool(get, "stream", False)
    options = get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage", "continuous_usage_stats"}:
        raise RequestError(f"stream_options={options!r} is invalid: only include_usage is supported",
                           param="stream_options")
    include_usage = _bool(options.get, "include_usage", False)
    if include_usage and not stream:
        raise RequestError("stream_options needs stream=true", param="stream_options")
    return GenerationRequest(prompts=[], params=params, stream=stream, include_usage=include_usage,
                             max_tokens_field=max_tokens_field,
                             clip_max_tokens=limits.clip_max_tokens)


def _messages(messages) -> list[dict]:
    """Messages with string content; OpenAI's list-of-text-parts content is joined."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects",
                           param="messages")
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                             and isinstance(p.get("text"), str) for p in content):
            content = "".join(p["text"] for p in content)
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, str):
            raise RequestError(f"message {m!r:.80} is invalid: needs a string role and a string "
                               "(or text parts) content", param="messages")
        out.append({"role": m["role"], "content": content})
    return out


def _prompts(prompt, max_prompts: int) -> list[Prompt]:
    allowed = "a string, a list of strings, a list of token ids, or a list of token-id lists"
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(_is_token_id(t) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt) or all(
                isinstance(p, list) and p and all(_is_token_id(t) for t in p) for p in prompt):
            if len(prompt) > max_prompts:
                raise RequestError(f"prompt has {len(prompt)} entries; at most {max_prompts} per "
                                   "request", param="prompt")
            return list(prompt)
    shown = repr(prompt) if len(repr(prompt)) <= 80 else repr(prompt)[:77] + "..."
    raise RequestError(f"prompt={shown} is invalid: must be {allowed} (non-empty, token ids >= 0)",
                       param="prompt")


def _stop(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return []
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(
            isinstance(s, str) and s for s in stops):
        raise RequestError(f"stop={stop!r} is invalid: must be a non-empty string or a list of at "
                           f"most {MAX_STOP_STRINGS} non-empty strings", param="stop")
    return stops


def _is_token_id(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and t >= 0


def _int(get, name: str, default, low: int, high: Optional[int]):
    value = get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise RequestError(f"{name}={value!r} is invalid: must be {allowed}", param=name)
    return value


def _float(get, name: str, default: float, low: float, high: float, allowed: str,
           low_open: bool = False, high_open: bool = False) -> float:
    value = get(name)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (low_open and value == low) or (
            high_open and value == high):
        raise RequestError(f"{name}={value!r} is invalid: must be a number {allowed}", param=name)
    return float(value)


def _bool(get, name: str, default: bool) -> bool:
    value = get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{name}={value!r} is invalid: must be true or false", param=name)
    return value
