"""Decode-step inputs for the kernel benchmarks and the GPU check, in the engine's layouts.

Default head shape is Qwen2.5-1.5B's (12 query heads, 2 KV heads, head_dim 128, hidden 1536,
vocab 151936): n samples of `groups` prompts, each sample `suffix` tokens into its generation.
"""
from __future__ import annotations

import torch

QWEN_1_5B = dict(heads=12, kv_heads=2, head_dim=128, hidden=1536, intermediate=8960, vocab=151936)
# one MoE layer of Qwen3-Coder-30B-A3B (bench/configs/qwen3-coder-30b-a3b): top-8 of 128 experts of 768
QWEN3_CODER_30B_A3B_MOE = dict(experts=128, top_k=8, hidden=2048, inter=768)


def attention_inputs(n: int, prefix: int, suffix: int, *, groups: int = 1, heads: int = 12, kv_heads: int = 2,
                     head_dim: int = 128, block_size: int = 16, device="cpu", dtype=torch.float32,
                     seed: int = 0) -> dict:
    """Keyword arguments of `shared_prefix_attention`: n rows split evenly over `groups` prompts of
    `prefix` tokens each, every row with `suffix` tokens of its own, in one paged pool whose blocks
    are handed out in a shuffled order (as a pool is after a while)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    per_group = [n // groups + (i < n % groups) for i in range(groups)]
    i32 = dict(device=device, dtype=torch.int32)
    prefix_blocks, suffix_blocks = -(-prefix // block_size), max(1, -(-suffix // block_size))
    used = groups * prefix_blocks + n * suffix_blocks
    blocks = (torch.randperm(used, generator=g) + 1).to(**i32)  # block 0 stays the engine's scratch block
    shape = (kv_heads, used + 1, block_size, head_dim)
    return dict(
        q=randn(n, heads, head_dim), prefix_k=randn(*shape), prefix_v=randn(*shape),
        row_ptr=torch.tensor([0] + per_group).cumsum(0).to(**i32),
        prefix_tables=blocks[:groups * prefix_blocks].view(groups, prefix_blocks),
        prefix_lens=torch.full((groups,), prefix, **i32),
        suffix_k=randn(*shape), suffix_v=randn(*shape),
        suffix_tables=blocks[groups * prefix_blocks:].view(n, suffix_blocks),
        suffix_lens=torch.full((n,), suffix, **i32), scale=head_dim ** -0.5)


def replicated_kv(a: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What an engine without prefix sharing holds: every row's own copy of [prefix; suffix] KV,
    as SDPA inputs q [B, H, 1, D], k/v [B, Hkv, L, D]. Needs equal suffix lengths."""
    from budget_sampler_kernels.attention import gather_blocks
    suffix, prefix = int(a["suffix_lens"][0]), int(a["prefix_lens"][0])
    group_of_row = torch.repeat_interleave(torch.arange(len(a["prefix_lens"]), device=a["q"].device),
                                           (a["row_ptr"][1:] - a["row_ptr"][:-1]).long())
    tables = a["prefix_tables"][group_of_row]

    def replicate(prefix_cache, suffix_cache):
        kv = torch.cat([gather_blocks(prefix_cache, tables, prefix)[:, :, :prefix],
                        gather_blocks(suffix_cache, a["suffix_tables"], suffix)[:, :, :suffix]], dim=2)
        return kv.transpose(0, 1).contiguous()  # [B, Hkv, L, D]

    return a["q"].unsqueeze(2), replicate(a["prefix_k"], a["suffix_k"]), replicate(a["prefix_v"], a["suffix_v"])


def sdpa_replicated(q, k, v, scale):
    """Decode attention over replicated KV with torch SDPA (GQA without copying K/V)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)


def flash_attn_replicated():
    """flash-attn over the same replicated KV, when it is installed (CUDA only)."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return lambda q, k, v, scale: flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  softmax_scale=scale)


def sampling_inputs(n: int, vocab: int, *, device="cpu", dtype=torch.float32, seed: int = 0,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 0.95, min_p: float = 0.0) -> tuple:
    """Positional arguments of `sample`: logits scaled like a trained model's (a few peaked rows)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    logits = (torch.randn(n, vocab, generator=g) * 3).to(device=device, dtype=dtype)
    full = lambda value, dt: torch.full((n,), value, device=device, dtype=dt)  # noqa: E731
    return (logits, full(temperature, torch.float32), full(top_k, torch.int32), full(top_p, torch.float32),
            full(min_p, torch.float32), full(seed, torch.int64), torch.arange(n, device=device),
            full(7, torch.int64))


def norm_inputs(n: int, hidden: int, *, device="cpu", dtype=torch.float32, seed: int = 0) -> tuple:
    """Positional arguments of `rms_norm` with a residual."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x, residual = (torch.randn(2, n, hidden, generator=g) * 2).to(device=device, dtype=dtype)
    weight = (torch.rand(hidden, generator=g) + 0.5).to(device=device, dtype=dtype)
    return x, weight, 1e-6, residual


def rope_inputs(n: int, *, heads: int = 12, kv_heads: int = 2, head_dim: int = 128, cache_rows: int = 4096,
                device="cpu", dtype=torch.float32, seed: int = 0) -> tuple:
    """Positional arguments of `rope_write_kv`: q/k/v split from one fused projection, as the model
    passes them, written to scattered rows of a flat cache."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    qkv = torch.randn(n, (heads + 2 * kv_heads) * head_dim, generator=g).to(device=device, dtype=dtype)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    inv_freq = 1.0 / 1e6 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    freqs = torch.randint(0, 8192, (n, 1), generator=g).float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1).to(device)
    k_cache = torch.zeros(max(cache_rows, n), kv_heads, head_dim, device=device, dtype=dtype)
    rows = torch.randperm(max(cache_rows, n), generator=g)[:n].to(device)
    return (q.view(n, heads, head_dim), k.view(n, kv_heads, head_dim), v.view(n, kv_heads, head_dim),
            emb.cos(), emb.sin(), k_cache, torch.zeros_like(k_cache), rows)


def moe_inputs(n: int, *, experts: int, top_k: int, hidden: int, inter: int, device="cpu", dtype=torch.float32,
               seed: int = 0) -> tuple:
    """Arguments of `moe_experts` for n tokens: x, gate_up [E, 2I, H], down [E, H, I] (scaled so outputs
    are of order 1) and a random router's renormalised top-k weights (float32) and expert ids."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    x, gate_up, down = randn(n, hidden), randn(experts, 2 * inter, hidden) / hidden ** 0.5, \
        randn(experts, hidden, inter) / inter ** 0.5
    weights, ids = torch.softmax(randn(n, experts), dim=-1).topk(top_k, dim=-1)
    weights = weights / weights.sum(-1, keepdim=True)
    on = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return on(x), on(gate_up), on(down), weights.to(device), ids.to(device)
