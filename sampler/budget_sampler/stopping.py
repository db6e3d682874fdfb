"""A completion's text and its stop strings: decoded incrementally, equal to the full decode.

The rule (README "Semantics"): the text of generated ids is what the tokenizer decodes for
prompt + ids past the longest common prefix with what it decodes for the prompt alone (the
prompt's own text, unless the ids change how its last bytes decode), cut before the first
occurrence of a stop string; a stopped sample keeps the ids up to the one that completed the stop.

Decoding prompt + ids at every step would be quadratic, so each step decodes a window only (vLLM's
prefix / read offsets): from an anchor, at first a few prompt tokens that prime the decoder (a
SentencePiece decoder strips the leading space of the text it decodes: it must strip a prompt
token's, not the completion's), to the newest token. Text can still change in two places, so it is
held back from the committed text until it cannot: a trailing incomplete UTF-8 character (decoded
as U+FFFD), and with SentencePiece byte fallback a run of <0x..> byte tokens, which Hugging Face
decodes as a whole (one U+FFFD per byte if the run is not valid UTF-8). An anchor never falls
inside such a run. Stop strings are searched in the committed tail plus the held-back text at every
step, so each is found at the token that completes it. When a sample ends, its text is checked
against one full decode; a tokenizer that breaks the window's assumptions is then replayed in full.

Decoding the window is most of the host's work per generated token (~7 µs, with the GPU idle
between steps at n = 256), and a stop string ends at almost none of them. So a sample that is not
streamed decodes lazily: each token's text after a plain context (its piece, cached per id) is
appended to a guess of the text, and the window is decoded only when the guess's last characters
hold a stop string, when a token's piece is a partial character, or when the text is read. For
byte-level BPE and SentencePiece the guess is the text; for a tokenizer where it is not, the full
decode at the end finds what the guess missed (a stop string in the text, or one that ended
before the token it was found at) and replays that sample in full.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

logger = logging.getLogger("budget_sampler")

PRIME_TOKENS = 5    # prompt tokens that prime the window (vLLM's initial detokenization offset)
WINDOW_TOKENS = 4   # a window longer than this moves its anchor up at the next commit (decodes grow with it)
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # what HF's ByteFallback decoder turns into a byte


def _common_prefix(a: str, b: str) -> int:
    if b.startswith(a):
        return len(a)
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Detokenizer:
    """One tokenizer's decode (`decode(ids, skip_special_tokens=True,
    clean_up_tokenization_spaces=False)`, through the Rust tokenizer when there is one: the
    same text, a fifth of the time) and the text rule over it."""

    def __init__(self, tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            self.decode = lambda ids: backend.decode(ids, skip_special_tokens=True)
        else:
            self.decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True,
                                                       clean_up_tokenization_spaces=False)
        # tokens after which the text may still change: byte pieces, and added tokens (skipped
        # special tokens let the byte runs on either side join)
        self.holds = {i for t, i in tokenizer.get_vocab().items() if _BYTE_PIECE.fullmatch(t)}
        self.holds |= set(getattr(tokenizer, "added_tokens_decoder", {}))
        self.tokenizer = tokenizer
        self._pieces: dict[int, Optional[str]] = {}
        self._warned = False

    @cached_property
    def _context(self) -> tuple[list[int], str]:
        """A plain token that pieces are decoded after, and its text."""
        ids = self.tokenizer.encode("a", add_special_tokens=False)[-1:]
        return ids, self.decode(ids)

    def piece(self, token_id: int) -> Optional[str]:
        """The text a token adds after a plain one (a guess where the text around it can still
        change, as for a byte piece); None for a partial character, where the lazy stop search
        decodes."""
        if token_id not in self._pieces:
            ids, before = self._context
            text = self.decode(ids + [token_id])
            plain = text.startswith(before) and "\ufffd" not in text
            self._pieces[token_id] = text[len(before):] if plain else None
        return self._pieces[token_id]

    def prompt(self, prompt_ids: list[int]) -> "PromptText":
        """What every sample of one prompt shares: its text, and the window start that primes."""
        start = max(0, len(prompt_ids) - PRIME_TOKENS)
        while start > 0 and prompt_ids[start - 1] in self.holds:
            start -= 1
        prime = list(prompt_ids[start:])
        return PromptText(list(prompt_ids), self.decode(prompt_ids), prime, self.decode(prime))

    def text(self, prompt: "PromptText", ids: list[int]) -> str:
        """The rule itself, by one full decode."""
        full = self.decode(prompt.ids + ids)
        return full[_common_prefix(prompt.text, full):]

    def settle(self, prompt: "PromptText", ids: list[int], stop: list[str],
               incremental: Optional["IncrementalText"]) -> tuple[str, int, bool]:
        """A finished sample's (text, how many of `ids` it keeps, whether a stop string cut it),
        checked against one full decode of the kept ids."""
        full = self.text(prompt, ids)
        if incremental is None:
            return full, len(ids), False
        if incremental.uncut is not None:
            exact = incremental.uncut == full and not (
                incremental.guessed and _stop_in(self.text(prompt, ids[:-1]), stop))  # it ended at the last id
        else:
            exact = incremental.text == full and not _stop_in(full, stop)
        if exact:
            return incremental.text, len(ids), incremental.uncut is not None
        if not self._warned:
            logger.warning("incremental detokenization disagreed with the full decode for this "
                           "tokenizer; replaying each finished sample in full (slower, exact)")
            self._warned = True
        for kept in range(1, len(ids) + 1):
            text = self.text(prompt, ids[:kept])
            found = [i for i in (text.find(s) for s in stop) if i >= 0]
            if found:
                return text[:min(found)], kept, True
        return full, len(ids), False

    def token_texts(self, prompt: "PromptText", ids: list[int], text: str) -> list[str]:
        """Each token's share of a finished sample's `text`, joining to it exactly: what the token
        adds to the longest prefix of `text` known once it has arrived, so a partial character
        goes to the token that completes it (the server's log-prob tokens and offsets)."""
        incremental, known = IncrementalText(self, prompt, []), []
        for token_id in ids:
            incremental.add(token_id)
            known.append(min(_common_prefix(incremental.text, text), len(text)))
        if known:
            known[-1] = len(text)
        for i in range(len(known) - 2, -1, -1):
            known[i] = min(known[i], known[i + 1])
        return [text[a:b] for a, b in zip([0] + known[:-1], known)]

    def token_text(self, context: list[int], token_id: int) -> str:
        """What one token adds after `context` (a few tokens before it): for top log-probs."""
        before, after = self.decode(context), self.decode(context + [token_id])
        return after[_common_prefix(before, after):]


def _stop_in(text: str, stop: list[str]) -> bool:
    return any(s in text for s in stop)


@dataclass
class PromptText:
    ids: list[int]
    text: str          # the prompt's full decode
    prime: list[int]   # its last tokens, from a point no byte run spans
    prime_text: str


class IncrementalText:
    """One sample's text as its tokens arrive. `add` returns True once a stop string appears;
    `text` is then cut before it. `lazy` (with stop strings, not for a stream) decodes only where
    a stop string may end (module docstring)."""

    def __init__(self, detokenizer: Detokenizer, prompt: PromptText, stop: list[str], lazy: bool = False):
        self.detokenizer, self.stop = detokenizer, stop
        self.max_stop = max((len(s) for s in stop), default=0)
        self.lazy = lazy and bool(stop)
        self.pending: list[int] = []  # ids added but not decoded yet (lazy)
        self.guess = ""               # the text up to them: the last decode's, then their pieces
        self.guessed = False          # whether the stop was found after more than one id went undecoded
        self.window = list(prompt.prime)  # token ids from the anchor to the newest
        self.anchor_text = prompt.prime_text  # decode of the window up to the last commit
        self.committed = ""  # completion text that can no longer change
        self.tail = ""       # text after it that may still change
        self._commits = [0]  # the last two anchor points in the window (the prompt's end may sit in a byte run)
        self.uncut: Optional[str] = None  # the text before the stop cut it

    @property
    def text(self) -> str:
        if self.pending:
            self._decode()
        return self.committed + self.tail

    @property
    def released(self) -> str:
        """The text that can no longer change nor become part of a stop string: the committed
        text less its longest end that begins a stop string (what a stream may send)."""
        end = len(self.committed)
        for k in range(min(self.max_stop - 1, end), 0, -1):
            if any(s.startswith(self.committed[end - k:]) for s in self.stop):
                return self.committed[:end - k]
        return self.committed

    def add(self, token_id: int) -> bool:
        self.pending.append(token_id)
        if self.lazy:
            piece = self.detokenizer.piece(token_id)
            if piece is not None:
                self.guess = (self.guess + piece)[-(self.max_stop - 1 + len(piece)):]  # where a stop could end
                if not _stop_in(self.guess, self.stop):
                    return False
        return self._decode()

    def _decode(self) -> bool:
        """Decode the window through the pending ids; True if a stop string appeared."""
        batched, token_id = len(self.pending) > 1, self.pending[-1]
        self.window += self.pending
        self.pending = []
        decoded = self.detokenizer.decode(self.window)
        tail = decoded[_common_prefix(self.anchor_text, decoded):]
        if self.stop:
            start = max(0, len(self.committed) - self.max_stop + 1)
            region = self.committed[start:] + tail
            found = [i for i in (region.find(s) for s in self.stop) if i >= 0]
            if found:
                self.uncut, self.guessed = self.committed + tail, batched
                self.committed, self.tail = self.uncut[:start + min(found)], ""
                return True
        self.tail = tail
        text = self.committed + tail
        self.guess = text[max(0, len(text) - self.max_stop + 1):]
        if token_id not in self.detokenizer.holds and not decoded.endswith("\ufffd"):
            self._commit(decoded)
        return False

    def _commit(self, decoded: str) -> None:
        self.committed += self.tail
        self.tail = ""
        self._commits = [self._commits[-1], len(self.window)]
        if len(self.window) > WINDOW_TOKENS and self._commits[0]:  # anchor at the previous commit: no run spans it
            self.window = self.window[self._commits[0]:]
            self._commits = [0, len(self.window)]
            decoded = self.detokenizer.decode(self.window)
        self.anchor_text = decoded
