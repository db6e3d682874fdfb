"""What a sample costs a model (FLOPs from its config, seconds from the run) and how many samples a
budget buys.

FLOP counts follow the usual 2 FLOPs per multiply-accumulate. Budgets are compared in units of one
sample of the cheapest model, on a doubling grid, as in Hassid et al. 2024 (pass_flops@f: pass@k at
the largest k whose cost fits f).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import InvalidInput
from ..models.llama import ModelConfig, Transformer

# Hassid et al. measured FLOPs per sample with calflops at sequence length 128.
PAPER_TOKENS = 128
FLOPS_MODES = ("paper", "exact")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder that FLOP counts need; JSON-able so a report can be rebuilt from disk."""
    parameters: int         # unique trainable parameters (a tied embedding counted once)
    matmul_parameters: int  # parameters that do matmul work: all but the input embedding
    num_layers: int
    attention_width: int    # query heads x head dim: the width of Q.K^T and of attention x V

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
                   num_layers=c.num_layers, attention_width=c.num_heads * c.head_dim)

    def as_dict(self) -> dict:
        return asdict(self)

    def paper_flops(self) -> float:
        """2 x matmul parameters x 128 tokens: the paper's constant cost of one sample."""
        return 2.0 * self.matmul_parameters * PAPER_TOKENS

    def prefill_flops(self, prompt_tokens: int) -> float:
        """The prompt's forward pass: 2 x matmul parameters per token plus causal attention, where
        the token at position t does Q.K^T and attention x V over t keys: 4 x width x t per layer."""
        p = prompt_tokens
        return 2.0 * self.matmul_parameters * p + 2.0 * self.num_layers * self.attention_width * p * (p + 1)

    def decode_flops(self, prompt_tokens: int, new_tokens: int) -> float:
        """Generating new tokens after the prompt: token j sees a context of prompt_tokens + j."""
        p, m = prompt_tokens, new_tokens
        return (2.0 * self.matmul_parameters * m
                + 4.0 * self.num_layers * self.attention_width * (m * p + m * (m + 1) / 2))

    def sample_flops(self, prompt_tokens: int, new_tokens: int, samples_per_prompt: int = 1) -> float:
        """What the engine spends on one sample: its decode plus its share of the prompt's prefill,
        which prefix sharing does once for all samples of a prompt (samples_per_prompt=1: no sharing)."""
        return self.prefill_flops(prompt_tokens) / samples_per_prompt + self.decode_flops(prompt_tokens, new_tokens)


def flops_per_sample(config, mode: str = "paper", prompt_tokens: int = 0, new_tokens: int = PAPER_TOKENS,
                     samples_per_prompt: int = 1) -> float:
    """FLOPs of one sample of the model a transformers config describes. "paper": Hassid et al.'s
    constant; "exact": what our engine spends for these token counts (see ModelShape.sample_flops)."""
    shape = ModelShape.from_config(config)
    if mode == "paper":
        return shape.paper_flops()
    if mode == "exact":
        return shape.sample_flops(prompt_tokens, new_tokens, samples_per_prompt)
    raise InvalidInput(f"FLOPs mode {mode!r} is invalid: choose one of {', '.join(FLOPS_MODES)}")


@dataclass(frozen=True)
class CostModel:
    """Cost of k samples of one problem: fixed + k x per_sample (fixed: a prefill shared by all k)."""
    fixed: float
    per_sample: float

    def cost(self, k: int) -> float:
        return self.fixed + k * self.per_sample

    def affordable(self, budget: float, n: int) -> int:
        """The largest k <= n whose cost fits the budget (0 when not even one sample does)."""
        if self.per_sample <= 0:
            return n if budget >= self.fixed else 0
        k = math.floor((budget - self.fixed) / self.per_sample + 1e-9)  # 1e-9: grid points are exact
        return max(0, min(n, k))


def budget_grid(costs: list[CostModel], n: int) -> tuple[float, list[int]]:
    """The unit (one sample of the cheapest model) and the doubling grid 1, 2, 4, ... of budgets in
    that unit, up to the first budget at which every model can draw all n samples."""
    unit = min(c.cost(1) for c in costs)
    if unit <= 0:
        raise ValueError(f"cost of one sample must be positive, got {unit}")
    top = max(c.cost(n) for c in costs) / unit
    return unit, [2 ** j for j in range(max(0, math.ceil(math.log2(top) - 1e-9)) + 1)]
