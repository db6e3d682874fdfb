"""The OpenAI completions wire format: a request body in, prompts + SamplingParams out; finished
Completions in, the response body out.

Pure functions with no HTTP in them, so that `sampler.serve` is only about serving and the schema
can be tested on plain dicts. Every field is checked here (type, range, the server's upper bounds)
and a bad one raises RequestError naming the field and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from ..errors import InvalidInput
from ..params import Completion, SamplingParams

Prompt = Union[str, list[int]]

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 5  # OpenAI's bound; we return the chosen token's log-prob only, top_logprobs is null
SUPPORTED_FIELDS = ("model", "prompt", "n", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                    "stop", "seed", "logprobs", "ignore_eos", "echo", "stream", "user")


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


@dataclass
class CompletionRequest:
    prompts: list[Prompt]  # one engine request each; a token-id list is used as is
    params: SamplingParams
    logprobs: Optional[int]


def parse_completion_request(body, model_id: str, limits: Limits) -> CompletionRequest:
    """Validate a decoded JSON body. `max_tokens` becomes max_new_tokens; a null field means its
    default, as in the OpenAI API."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(SUPPORTED_FIELDS))
    if unknown:
        raise RequestError(f"unsupported field(s) {', '.join(map(repr, unknown))}; supported: "
                           f"{', '.join(SUPPORTED_FIELDS)}", param=unknown[0])
    get = {k: v for k, v in body.items() if v is not None}.get

    model = get("model")
    if model is not None and model != model_id:
        raise RequestError(f"model={model!r} is not served here; this server serves {model_id!r}",
                           status=404, param="model")
    for name in ("echo", "stream"):
        if _bool(get, name, False):
            raise RequestError(f"{name}=true is not supported; send false or leave it out", param=name)
    user = get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError(f"user={user!r} is invalid: must be a string", param="user")

    n = _int(get, "n", 1, 1, limits.max_n)
    top_k = _int(get, "top_k", 0, -1, None)
    params = SamplingParams(
        n=n,
        temperature=_float(get, "temperature", 1.0, 0.0, 2.0, "in [0, 2] (0 means greedy)"),
        top_p=_float(get, "top_p", 1.0, 0.0, 1.0, "in (0, 1]", low_open=True),
        top_k=max(top_k, 0),  # vLLM's -1 and our 0 both mean "no top-k"
        min_p=_float(get, "min_p", 0.0, 0.0, 1.0, "in [0, 1)", high_open=True),
        max_new_tokens=_int(get, "max_tokens", 16, 1, limits.max_tokens),
        stop=_stop(get("stop")),
        seed=_int(get, "seed", None, 0, 2**63 - 1),
        ignore_eos=_bool(get, "ignore_eos", False),
    )
    return CompletionRequest(prompts=_prompts(get("prompt"), limits.max_prompts), params=params,
                             logprobs=_int(get, "logprobs", None, 0, MAX_LOGPROBS))


def completion_response(*, request_id: str, created: int, model_id: str,
                        completions: Sequence[Sequence[Completion]], prompt_tokens: int,
                        logprobs: Optional[int], decode_token: Callable[[int], str]) -> dict:
    """`completions[i]` are prompt i's samples; choice index = i * n + sample index, as OpenAI
    numbers them. Our "eos" finish is OpenAI's "stop" (OpenAI has only stop and length)."""
    choices = []
    for prompt_index, samples in enumerate(completions):
        for c in samples:
            choices.append({
                "index": prompt_index * len(samples) + c.index,
                "text": c.text,
                "logprobs": _logprobs(c, decode_token) if logprobs is not None else None,
                "finish_reason": "length" if c.finish_reason == "length" else "stop",
            })
    completion_tokens = sum(len(c.token_ids) for samples in completions for c in samples)
    return {
        "id": request_id,
        "object": "text_completion",
        "created": created,
        "model": model_id,
        "choices": sorted(choices, key=lambda choice: choice["index"]),
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(message: str, status: int, param: Optional[str] = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def _logprobs(c: Completion, decode_token: Callable[[int], str]) -> dict:
    """Chosen tokens only: one entry per generated token (a stop string's tokens included, though
    the text leaves the stop string out); text_offset is each token's start in the joined tokens."""
    tokens = [decode_token(t) for t in c.token_ids]
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return {"tokens": tokens, "token_logprobs": list(c.token_logprobs), "top_logprobs": None,
            "text_offset": offsets}


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
