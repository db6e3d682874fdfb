"""Causal attention of one prompt over its own paged K/V (the prefill, at batch 1): the op the
engine and the scorer run, through torch's SDPA (flash / memory-efficient kernels on CUDA, a fused
kernel on CPU), and a plain reference beside it for the tests.

Layouts: q [L, H, D] (the prompt's L query rows); K/V caches [Hkv, num_blocks, block_size, D] with
the prompt's tokens in the blocks `table` (int [1, max_blocks]) lists, already written; query head h
reads KV head h // (H // Hkv), as in HF.

Options per layer, as in decode (attention.py): a sliding `window` (query position i sees keys
i - window + 1 .. i, Hugging Face's `kv_idx > q_idx - window`) goes to SDPA as a boolean mask;
`softcap` (scores softcap * tanh(s / softcap), Gemma 2), which SDPA cannot apply, runs the plain
float32 math in chunks of query rows so the score matrix stays small.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .attention import gather_blocks

SOFTCAP_CHUNK = 512  # query rows per chunk of the soft-capped prefill: [H, 512, L] float32 scores


def _prompt_kv(k_cache, v_cache, table, length):
    """K and V of the prompt's tokens, [1, Hkv, L, D] each."""
    k = gather_blocks(k_cache, table, length)[:, :, :length]  # [Hkv, 1, L, D]
    v = gather_blocks(v_cache, table, length)[:, :, :length]
    return k.transpose(0, 1), v.transpose(0, 1)


def _visible(rows: torch.Tensor, length: int, window: Optional[int]) -> torch.Tensor:
    """bool [len(rows), length]: key t is visible to query position i if t <= i (and t > i - window)."""
    t = torch.arange(length, device=rows.device)
    seen = t[None, :] <= rows[:, None]
    return seen if window is None else seen & (t[None, :] > rows[:, None] - window)


def _attend_plain(q, k, v, rows, scale, softcap, window, dtype):
    """Scores, mask and softmax in `dtype` for query positions `rows`; q [R, H, D], k/v [H, L, D]."""
    s = torch.einsum("lhd,htd->hlt", q.to(dtype), k) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    p = torch.softmax(s.masked_fill(~_visible(rows, k.shape[1], window), float("-inf")), dim=-1)
    return torch.einsum("hlt,htd->lhd", p, v).to(q.dtype)


def _repeated_kv(k_cache, v_cache, table, length, heads, dtype):
    """K and V [H, L, D] in `dtype`, each KV head repeated for its query heads."""
    return (t[0].to(dtype).repeat_interleave(heads // t.shape[1], dim=0)
            for t in _prompt_kv(k_cache, v_cache, table, length))


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                      scale: float, softcap: Optional[float] = None, window: Optional[int] = None) -> torch.Tensor:
    length, heads, _ = q.shape
    if window is not None and window >= length:
        window = None
    if softcap is not None:
        dtype = torch.promote_types(q.dtype, torch.float32)
        k, v = _repeated_kv(k_cache, v_cache, table, length, heads, dtype)
        rows = torch.arange(length, device=q.device)
        return torch.cat([_attend_plain(q[i:i + SOFTCAP_CHUNK], k, v, rows[i:i + SOFTCAP_CHUNK], scale, softcap,
                                        window, dtype) for i in range(0, length, SOFTCAP_CHUNK)])
    k, v = _prompt_kv(k_cache, v_cache, table, length)
    mask = None if window is None else _visible(torch.arange(length, device=q.device), length, window)
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k, v, attn_mask=mask,
                                         is_causal=mask is None, scale=scale, enable_gqa=True)
    return out.squeeze(0).transpose(0, 1)


def prefill_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, table: torch.Tensor,
                          scale: float, softcap: Optional[float] = None, window: Optional[int] = None) -> torch.Tensor:
    """Scores, a causal (and window) mask and a softmax in float32 (float64 inputs: float64), each KV
    head repeated for its query heads, all query rows at once."""
    length, heads, _ = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    k, v = _repeated_kv(k_cache, v_cache, table, length, heads, dtype)
    return _attend_plain(q, k, v, torch.arange(length, device=q.device), scale, softcap, window, dtype)
