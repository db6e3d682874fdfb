"""evalplus adapter: `SamplerDecoder`, an evalplus-style decoder for evalplus's own codegen loop.

evalplus asks a decoder for `codegen(prompt, do_sample, num_samples)`; its own providers send
`[prompt] * batch_size` through vLLM or transformers, prefilling the prompt once per copy. We send
ONE prompt with n = num_samples, so the prompt is prefilled once and its KV shared by all samples.

The decoder duck-types evalplus's `DecoderBase` (evalplus calls `codegen` and
`is_direct_completion` and never checks the type), so it needs no evalplus installed.
`budget-sampler export` writes a whole dataset's samples for `evalplus.evaluate`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..errors import InvalidInput
from ..params import SamplingParams

# Where a direct completion of a function ends: the start of the next top-level statement
# (evalplus's stop sequences for direct completion of each dataset).
STOP = {
    "humaneval": ["\ndef ", "\nclass ", "\nimport ", "\nfrom ", "\nassert ", "\nif __name__",
                  "\nprint("],
    "mbpp": ['\n"""', "\nassert", "\nif __name__", "\nprint("],
}


class SamplerDecoder:
    def __init__(self, sampler, name: str, temperature: float = 0.8, top_p: float = 0.95,
                 max_new_tokens: int = 768, stop: Sequence[str] = STOP["humaneval"],
                 seed: Optional[int] = None):
        self.sampler, self.name = sampler, name
        self.temperature, self.top_p = temperature, top_p
        self.max_new_tokens, self.stop, self.seed = max_new_tokens, list(stop), seed

    def codegen(self, prompt: str, do_sample: bool = True, num_samples: int = 200) -> list[str]:
        """num_samples completions of `prompt` (the text after it), from one n-sample request.
        Greedy (do_sample=False) decodes once and repeats the answer: greedy samples agree."""
        if do_sample and self.temperature <= 0:
            raise InvalidInput(f"do_sample needs temperature > 0, got {self.temperature}")
        params = SamplingParams(
            n=num_samples if do_sample else 1, temperature=self.temperature if do_sample else 0.0,
            top_p=self.top_p if do_sample else 1.0, max_new_tokens=self.max_new_tokens,
            stop=self.stop, seed=self.seed)
        texts = [c.text for c in self.sampler.generate([prompt], params)[0]]
        return texts if do_sample else texts * num_samples

    def is_direct_completion(self) -> bool:
        """We continue the prompt as written (no chat template), so evalplus prepends it."""
        return True

    def __str__(self) -> str:
        return self.name
