"""A decoder's shape as FLOP counts need it (parameters, layers, attention width), from its config
alone, and the FLOPs of its prefill and decode: facts about the model, used by eval's budgets and by
`plan`'s sizing."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .llama import ModelConfig, Transformer

# Hassid et al. measured FLOPs per sample with calflops at sequence length 128.
PAPER_TOKENS = 128


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder that FLOP counts need; JSON-able so a report can be rebuilt from disk."""
    parameters: int         # unique trainable parameters (a tied embedding counted once)
    matmul_parameters: int  # parameters that do matmul work: all but the input embedding
    num_layers: int
    attention_width: int    # query heads x head dim: the width of Q.K^T and of attention x V
    # per layer: its sliding window or None (full attention); empty: every layer full (older records)
    layer_windows: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "layer_windows", tuple(self.layer_windows))  # a JSON list read back from disk

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config of a supported family, counting our decoder's parameters on the
        meta device (no memory, no weights)."""
        c = ModelConfig.from_hf(config)
        with torch.device("meta"):
            parameters = sum(p.numel() for p in Transformer(c).parameters())
        embedding = c.vocab_size * c.hidden_size
        # the output projection multiplies even when it shares its matrix with the input embedding
        return cls(parameters=parameters,
                   matmul_parameters=parameters - (0 if c.tie_word_embeddings else embedding),
                   num_layers=c.num_layers, attention_width=c.num_heads * c.head_dim,
                   layer_windows=tuple(c.layer_windows))

    def as_dict(self) -> dict:
        return asdict(self)

    def paper_flops(self) -> float:
        """2 x matmul parameters x 128 tokens: the paper's constant cost of one sample."""
        return 2.0 * self.matmul_parameters * PAPER_TOKENS

    def attended_keys(self, tokens: int) -> float:
        """Keys attended, summed over layers, by the tokens at positions 0 .. tokens - 1: the token at
        position t sees t + 1 keys, at most W in a layer with sliding window W."""
        return sum(_keys(tokens, w) for w in self.layer_windows or (None,) * self.num_layers)

    def prefill_flops(self, prompt_tokens: int) -> float:
        """The prompt's forward pass: 2 x matmul parameters per token plus causal attention, where
        a token does Q.K^T and attention x V over each key it sees: 4 x width per key and layer."""
        p = prompt_tokens
        return 2.0 * self.matmul_parameters * p + 4.0 * self.attention_width * self.attended_keys(p)

    def decode_flops(self, prompt_tokens: int, new_tokens: int) -> float:
        """Generating new tokens after the prompt: token j sees a context of prompt_tokens + j (the
        last W of it in a window-W layer)."""
        p, m = prompt_tokens, new_tokens
        return (2.0 * self.matmul_parameters * m
                + 4.0 * self.attention_width * (self.attended_keys(p + m) - self.attended_keys(p)))

    def sample_flops(self, prompt_tokens: int, new_tokens: int, samples_per_prompt: int = 1) -> float:
        """What the engine spends on one sample: its decode plus its share of the prompt's prefill,
        which prefix sharing does once for all samples of a prompt (samples_per_prompt=1: no sharing)."""
        return self.prefill_flops(prompt_tokens) / samples_per_prompt + self.decode_flops(prompt_tokens, new_tokens)


def _keys(tokens: int, window) -> float:
    """sum over n = 1 .. tokens of min(n, window): the keys tokens 0 .. tokens - 1 see in one layer."""
    if window is None or tokens <= window:
        return tokens * (tokens + 1) / 2
    return window * (window + 1) / 2 + (tokens - window) * window
