"""`budget-sampler plan`: size a sampling run from a model's config.json alone (no weights).

For a GPU's memory it works out the weights' bytes, the KV bytes per token, how many samples the
KV cache holds at once with the old static layout (every slot reserves max_new_tokens) and with
paged KV (a sample holds blocks for what it has generated), and the decode step's memory-roofline
time (`decode_step_bytes` over the bandwidth; bench/gpu_check.py, `budget-sampler profile` and eval's
report measure against the same bytes, and against `decode_step_flops`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import cdiv
from .memory import CUDA_DEFAULT_FRACTION, kv_bytes_per_token
from .models import ModelConfig, load_hf_config
from .models.shape import ModelShape


@dataclass
class Plan:
    model_type: str
    parameters: int
    active_parameters: int      # per token (all of them for a dense model)
    weight_bytes: int           # per GPU
    kv_bytes_per_token: int     # per GPU
    kv_cache_bytes: int         # per GPU: the default fraction of the memory left after the weights
    prompt_kv_bytes: int        # stored once per prompt, whatever n is
    static_slots: int           # samples that fit at once when each reserves max_new_tokens
    static_bytes_needed: int    # what max_batch_size static slots would need
    paged_samples: int          # samples that fit at once holding mean_new_tokens each (block-rounded)
    batch: int                  # samples decoded together: min(n, max_batch_size, paged_samples)
    step_bytes: int             # bytes one decode step moves at that batch, each sample mean_new_tokens long
    step_seconds: float         # memory-roofline time of that step
    tokens_per_second: float    # batch / step_seconds


def decode_step_bytes(hf_config, dtype: torch.dtype, batch: int, prompt_tokens: int, suffix_tokens: int,
                      tensor_parallel: int = 1) -> int:
    """Least bytes one decode step of `batch` samples of one prompt moves on one GPU: every weight
    that does matmul work, once (the embedding table only as a tied LM head: the rows it looks up
    are negligible; of a mixture of experts, the experts `batch` tokens are expected to touch), the
    prompt's KV once, each sample's own KV of `suffix_tokens`, and the logits written once and read
    once (the LM head is replicated under tensor parallel). A layer with a sliding window W reads the
    last W positions only: of the prompt what the samples' windows still cover, of each suffix at
    most W tokens."""
    cfg = ModelConfig.from_hf(hf_config)
    weights = int(ModelShape.from_config(hf_config).matmul_parameters_read(batch)) * dtype.itemsize // tensor_parallel
    p, s = prompt_tokens, suffix_tokens
    tokens = sum(p + batch * s if w is None else min(p, max(0, w - s)) + batch * min(s, w)
                 for w in cfg.layer_windows)  # KV tokens read, summed over layers
    kv = kv_bytes_per_token(cfg, dtype) // cfg.num_layers // tensor_parallel * tokens
    return weights + kv + 2 * batch * cfg.vocab_size * dtype.itemsize


def decode_step_flops(hf_config, batch: int, prompt_tokens: int, suffix_tokens: int) -> float:
    """FLOPs of the decode step at which each of `batch` samples of one prompt makes its suffix_tokens-th
    token (the step decode_step_bytes moves the bytes of): ModelShape's count for that token."""
    shape, p, s = ModelShape.from_config(hf_config), prompt_tokens, suffix_tokens
    return batch * (shape.decode_flops(p, s) - shape.decode_flops(p, s - 1))


def samples_that_fit(kv_bytes: int, per_token: int, prompt_tokens: int, new_tokens: int, block_size: int) -> int:
    """Samples of one prompt that kv_bytes of paged KV hold at once: the prompt's blocks stored once, then
    each sample's new_tokens, rounded up to whole blocks."""
    block = block_size * per_token
    return max(0, kv_bytes - cdiv(prompt_tokens, block_size) * block) // (cdiv(new_tokens, block_size) * block)


def plan(path, gpu_memory: int, dtype: torch.dtype, prompt_tokens: int, mean_new_tokens: int, max_new_tokens: int,
         tensor_parallel: int = 1, n: int = 200, max_batch_size: int = 256, block_size: int = 16,
         bandwidth: float = 3.35e12) -> Plan:
    hf_config = load_hf_config(path)
    cfg, shape = ModelConfig.from_hf(hf_config), ModelShape.from_config(hf_config)
    weight_bytes = shape.parameters * dtype.itemsize // tensor_parallel
    per_token = kv_bytes_per_token(cfg, dtype) // tensor_parallel
    budget = max(0, int(CUDA_DEFAULT_FRACTION * (gpu_memory - weight_bytes)))
    prompt_bytes = cdiv(prompt_tokens, block_size) * block_size * per_token
    left = max(0, budget - prompt_bytes)
    static_slots = left // (max_new_tokens * per_token)
    paged_samples = samples_that_fit(budget, per_token, prompt_tokens, mean_new_tokens, block_size)
    batch = min(n, max_batch_size, paged_samples)
    step_bytes = decode_step_bytes(hf_config, dtype, batch, prompt_tokens, mean_new_tokens, tensor_parallel)
    step_seconds = step_bytes / bandwidth
    return Plan(cfg.model_type, shape.parameters, shape.active_parameters, weight_bytes, per_token, budget,
                prompt_bytes, static_slots,
                max_batch_size * max_new_tokens * per_token + prompt_bytes, paged_samples, batch, step_bytes,
                step_seconds, batch / step_seconds if step_seconds else 0.0)


def describe(p: Plan, gpu_memory: int, n: int, max_batch_size: int, max_new_tokens: int) -> str:
    gb = lambda b: f"{b / 1e9:,.1f} GB"  # noqa: E731
    static_fits = p.static_slots >= min(n, max_batch_size)
    return "\n".join([
        f"model: {p.model_type}, {p.parameters / 1e9:,.2f}B parameters"
        + (f" ({p.active_parameters / 1e9:,.2f}B active per token)" if p.active_parameters != p.parameters else ""),
        f"weights: {gb(p.weight_bytes)} per GPU; KV cache: {gb(p.kv_cache_bytes)} "
        f"({CUDA_DEFAULT_FRACTION:g} of the {gb(gpu_memory - p.weight_bytes)} left of {gb(gpu_memory)})",
        f"KV per token: {p.kv_bytes_per_token / 2 ** 20:,.3f} MiB; prompt KV (stored once): {gb(p.prompt_kv_bytes)}",
        f"static layout (each slot reserves {max_new_tokens} tokens): {p.static_slots:,} samples at once; "
        f"max_batch_size={max_batch_size} would need {gb(p.static_bytes_needed)}"
        + ("" if p.static_bytes_needed <= p.kv_cache_bytes else " -> out of memory")
        + ("" if static_fits else f"; n={n} does not fit at once"),
        f"paged KV: {p.paged_samples:,} samples at once -> n={n} "
        + ("fits at once" if p.paged_samples >= n else f"runs {p.paged_samples:,} at a time"),
        f"decode step at batch {p.batch}: moves {gb(p.step_bytes)}, {p.step_seconds * 1e3:,.2f} ms at the memory "
        f"roofline -> {p.tokens_per_second:,.0f} tokens/s",
    ])


