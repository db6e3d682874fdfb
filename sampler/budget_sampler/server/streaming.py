"""One choice of a streamed response: its sample's deltas (Engine.take_deltas), then its Completion,
turned into stream chunk choices, one choice per chunk as OpenAI and vLLM send them.

A token's chunk carries the text the engine released with it (none while the text could still
change or begin a stop string, so no stop string is ever sent); the last chunk carries the rest of
the Completion's text and the finish reason. So a choice's chunks join to its non-streamed text,
and with logprobs each token's `token` is its chunk's text, so those join to it too.
"""
from __future__ import annotations

from typing import Optional

from ..params import Completion, Delta
from ..stopping import Detokenizer
from .protocol import (
    GenerationRequest,
    PromptInfo,
    alternatives,
    chat_logprobs,
    completion_logprobs,
    finish_reason,
    prompt_token_texts,
)


class ChoiceStream:
    def __init__(self, index: int, prompt: PromptInfo, request: GenerationRequest, detokenizer: Detokenizer,
                 chat: bool):
        self.index, self.prompt, self.request, self.detokenizer, self.chat = index, prompt, request, detokenizer, chat
        self.ids = list(prompt.token_ids)  # the prompt and the tokens sent: the alternatives' context
        self.alternative = alternatives(detokenizer, self.ids)
        self.text = ""   # the completion text sent
        self.offset = 0  # text_offset of the next token (past the echoed prompt)

    def opening(self) -> Optional[dict]:
        """The choice's first chunk: chat announces the role (as OpenAI's and vLLM's do); an echoed
        completion carries the prompt, and its log-probs if asked (the first token's is null)."""
        if self.chat:
            return {"index": self.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}
        if not self.request.echo:
            return None
        p, logprobs = self.prompt, None
        if self.request.logprobs is not None:
            logprobs = completion_logprobs(prompt_token_texts(self.detokenizer, p), [None] + p.logprobs,
                                           [None] + (p.top or [[]] * len(p.logprobs)), self.alternative, 0)
        self.offset = len(p.text)
        return self._choice(p.text, logprobs, None)

    def delta(self, d: Delta) -> Optional[dict]:
        """One token's chunk; None when it released no text and no log-probs are asked for."""
        self.text += d.text
        logprobs = self._logprobs([d.text], [d.logprob], [d.top_logprobs or []], [d.token_id])
        if not d.text and logprobs is None:
            return None
        return self._choice(d.text, logprobs, None)

    def finish(self, c: Completion) -> dict:
        """The last chunk: the text not sent yet, the tokens not sent yet (normally the last one,
        which takes that text) and the finish reason."""
        rest, sent = c.text[len(self.text):], len(self.ids) - len(self.prompt.token_ids)
        ids = c.token_ids[sent:]
        tops = (c.top_logprobs or [[]] * len(c.token_ids))[sent:]
        texts = [""] * (len(ids) - 1) + [rest] if ids else []
        self.text = c.text
        return self._choice(rest, self._logprobs(texts, c.token_logprobs[sent:], tops, ids), finish_reason(c))

    def _logprobs(self, texts: list[str], lps: list[float], tops: list, ids: list[int]) -> Optional[dict]:
        position = len(self.ids)
        self.ids.extend(ids)
        if self.request.logprobs is None:
            return None
        if self.chat:
            return chat_logprobs(texts, lps, tops, self.alternative, position)
        logprobs = completion_logprobs(texts, lps, tops, self.alternative, position, self.offset)
        self.offset += sum(map(len, texts))
        return logprobs

    def _choice(self, text: str, logprobs: Optional[dict], finish: Optional[str]) -> dict:
        if self.chat:
            return {"index": self.index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": finish}
        return {"index": self.index, "text": text, "logprobs": logprobs, "finish_reason": finish}
