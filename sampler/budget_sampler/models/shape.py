"""A decoder's shape as FLOP counts need it (parameters, layers, attention width), from its config
alone, and the FLOPs of its prefill and decode: facts about the model, used by eval's budgets and by
`plan`'s sizing.

Mixture of experts: a token multiplies by its top-k experts only, so FLOPs count the active matmul
parameters (attention projections, router, the top-k experts' MLPs, the LM head), while weight
memory counts every expert and a decode step reads the experts its tokens touch."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .llama import ModelConfig, Transformer

# Hassid et al. measured FLOPs per sample with calflops at sequence length 128.
PAPER_TOKENS = 128


def expected_experts(experts: int, top_k: int, tokens: int) -> float:
    """Experts of a layer that `tokens` tokens touch, each routed to top_k of them uniformly at random: an
    expert is missed by a token with probability 1 - k/E, so E x (1 - (1 - k/E)^tokens)."""
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder that FLOP counts need; JSON-able so a report can be rebuilt from disk."""
    parameters: int         # unique trainable parameters (a tied embedding counted once)
    matmul_parameters: int  # parameters that do matmul work: all but the input embedding
    num_layers: int
    attention_width: int    # query heads x head dim: the width of Q.K^T and of attention x V
    # mixture of experts (zero for dense models): layers of routed experts, experts per layer, experts
    # per token, and one expert's parameters (gate, up and down)
    moe_layers: int = 0
    experts: int = 0
    experts_per_token: int = 0
    expert_parameters: int = 0
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
                   moe_layers=len(c.moe_layers), experts=c.num_experts, experts_per_token=c.num_experts_per_tok,
                   expert_parameters=3 * c.hidden_size * c.moe_intermediate_size,
                   layer_windows=tuple(c.layer_windows))

    def as_dict(self) -> dict:
        return asdict(self)

    def _idle_expert_parameters(self, experts_used: float) -> float:
        """Parameters of the experts, over all MoE layers, beyond `experts_used` per layer."""
        return self.moe_layers * (self.experts - experts_used) * self.expert_parameters

    @property
    def active_parameters(self) -> int:
        """Parameters one token uses: all but the experts outside its top-k."""
        return self.parameters - int(self._idle_expert_parameters(self.experts_per_token))

    @property
    def active_matmul_parameters(self) -> int:
        """Matmul parameters one token multiplies by (all of them for a dense model)."""
        return self.matmul_parameters - int(self._idle_expert_parameters(self.experts_per_token))

    def matmul_parameters_read(self, tokens: int) -> float:
        """Matmul parameters a forward pass over `tokens` tokens reads: all but the experts none of them
        is routed to (expected). Top-8 of 128 experts over 64 tokens reads ~98% of the experts."""
        touched = expected_experts(self.experts, self.experts_per_token, tokens) if self.experts else 0.0
        return self.matmul_parameters - self._idle_expert_parameters(touched)

    def paper_flops(self) -> float:
        """2 x active matmul parameters x 128 tokens: the paper's constant cost of one sample (for a
        mixture of experts, the parameters a token multiplies by)."""
        return 2.0 * self.active_matmul_parameters * PAPER_TOKENS

    def attended_keys(self, tokens: int) -> float:
        """Keys attended, summed over layers, by the tokens at positions 0 .. tokens - 1: the token at
        position t sees t + 1 keys, at most W in a layer with sliding window W."""
        return sum(_keys(tokens, w) for w in self.layer_windows or (None,) * self.num_layers)

    def prefill_flops(self, prompt_tokens: int) -> float:
        """The prompt's forward pass: 2 x active matmul parameters per token plus causal attention, where
        a token does Q.K^T and attention x V over each key it sees: 4 x width per key and layer."""
        p = prompt_tokens
        return 2.0 * self.active_matmul_parameters * p + 4.0 * self.attention_width * self.attended_keys(p)

    def decode_flops(self, prompt_tokens: int, new_tokens: int) -> float:
        """Generating new tokens after the prompt: token j sees a context of prompt_tokens + j (the
        last W of it in a window-W layer)."""
        p, m = prompt_tokens, new_tokens
        return (2.0 * self.active_matmul_parameters * m
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
