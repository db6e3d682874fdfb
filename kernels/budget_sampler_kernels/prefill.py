"""Causal attention of one prompt over its own paged K/V (the prefill, at batch 1): the op the
engine and the scorer run, through torch's SDPA (flash / memory-efficient kernels on CUDA, a fused
kernel on CPU), and a plain reference beside it for the tests.

Layouts: q [L, H, D] (the prompt's L query rows); K/V caches [Hkv, num_blocks, block_size, D] with
the prompt's tokens in the blocks `table` (int [1, max_blocks]) lists, already written; query head h
reads KV head h // (H // Hkv), as in HF.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import gather_blocks


def _prompt_kv(k_cache, v_cache, table, length):
    """K and V of the prompt's tokens, [1, Hkv, L, D] each."""
    k = gather_blocks(k_cache, table, length)[:, :, :length]  # [Hkv, 1, L, D]
    v = gather_blocks(v_cache, table, length)[:, :, :length]
    return k.transpose(0, 1), v.transpose(0, 1)


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                      scale: float) -> torch.Tensor:
    length = q.shape[0]
    k, v = _prompt_kv(k_cache, v_cache, table, length)
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k, v, is_causal=True, scale=scale,
                                         enable_gqa=True)
    return out.squeeze(0).transpose(0, 1)


def prefill_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """Scores, a causal mask and a softmax in float32 (float64 inputs: float64), each KV head repeated for
    its query heads."""
    length, heads, _ = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    k, v = (t[0].to(dtype).repeat_interleave(heads // t.shape[1], dim=0)
            for t in _prompt_kv(k_cache, v_cache, table, length))  # [H, L, D]
    s = torch.einsum("lhd,htd->hlt", q.to(dtype), k) * scale
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
    return torch.einsum("hlt,htd->lhd", p, v).to(q.dtype)
