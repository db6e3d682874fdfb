"""Rotary position embedding fused with the write of K and V into a KV cache: reference and kernel.

The cache is addressed by flat rows: a cache tensor viewed as [rows, kv_heads, head_dim] and one
destination row per token, so the same op fills the prefix pool (prefill) and the per-slot suffix
cache (decode). cos/sin are Hugging Face's [tokens, head_dim] tables (halves duplicated).
"""
from __future__ import annotations

import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim]; cos/sin: [tokens, head_dim]."""
    cos = cos.to(x.dtype).unsqueeze(1)
    sin = sin.to(x.dtype).unsqueeze(1)
    return x * cos + _rotate_half(x) * sin


def rope_write_kv_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      cache_rows: torch.Tensor) -> torch.Tensor:
    """Rotate q and k; store rotated k and v at cache rows `cache_rows`; return rotated q.

    q: [N, H, D]; k, v: [N, Hkv, D]; k_cache, v_cache: [R, Hkv, D]; cache_rows: int [N].
    """
    k_cache[cache_rows] = rope_ref(k, cos, sin).to(k_cache.dtype)
    v_cache[cache_rows] = v.to(v_cache.dtype)
    return rope_ref(q, cos, sin)
