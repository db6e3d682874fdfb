"""Incremental detokenization and stop strings.

Text is decoded incrementally (vLLM's prefix/read offsets): only the tokens since the last stable
point are decoded again, and text ending in an incomplete UTF-8 sequence is held back. A stop
string is searched only in the tail that the new text could complete, so multi-token stops and
stops that straddle token boundaries are found, and the returned text excludes the stop.
"""
from __future__ import annotations


class StopChecker:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = stop
        self.max_stop = max((len(s) for s in stop), default=0)
        self.ids: list[int] = []
        self.text = ""
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> bool:
        """Append one generated token; True once a stop string has appeared (text is cut before it)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self.ids[self._prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return False
        delta = new_text[len(prefix_text):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        tail_start = max(0, len(self.text) - self.max_stop + 1)
        self.text += delta
        found = [i for i in (self.text.find(s, tail_start) for s in self.stop) if i >= 0]
        if found:
            self.text = self.text[:min(found)]
            return True
        return False
