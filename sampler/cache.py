"""Shared-prefix KV cache: each prompt's KV stored once in a prefix pool, each slot's own suffix KV.

The prefix pool is one tensor per K and V, [layers, tokens, kv_heads, head_dim]; a prompt gets a
contiguous range (first fit, the pool grows when full), so its memory does not depend on how many
samples read it. The suffix cache is [layers, slots, max_suffix, kv_heads, head_dim]: the tokens a
sample generated. Two batch views tell the model where to write K/V and how to attend:
PrefillBatch (one prompt, causal attention over itself) and SuffixBatch (rows that each extend a
slot's suffix after a group's prefix: decode steps and teacher-forced scoring).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import kernels

from .models.llama import ModelConfig


class PrefixPool:
    """Contiguous token ranges in one growable tensor pair; ranges keep their start when it grows."""

    def __init__(self, cfg: ModelConfig, device, dtype, capacity: int = 256):
        self.shape = (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
        self.device, self.dtype = device, dtype
        self.k = self.v = None
        self.capacity = 0
        self.ranges: dict[int, tuple[int, int]] = {}  # handle -> (start, length)
        self._next_handle = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        layers, hkv, d = self.shape
        k = torch.empty(layers, capacity, hkv, d, device=self.device, dtype=self.dtype)
        v = torch.empty_like(k)
        if self.k is not None:
            k[:, :self.capacity] = self.k
            v[:, :self.capacity] = self.v
        self.k, self.v, self.capacity = k, v, capacity

    def alloc(self, length: int) -> int:
        start = 0
        for s, n in sorted(self.ranges.values()):
            if s - start >= length:
                break
            start = max(start, s + n)
        if start + length > self.capacity:
            self._grow(max(2 * self.capacity, start + length))
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        self.ranges[handle] = (start, length)
        return handle

    def free(self, handle: int) -> None:
        del self.ranges[handle]

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class SuffixCache:
    """Per-slot KV of generated tokens; the suffix length grows when a request needs more."""

    def __init__(self, cfg: ModelConfig, slots: int, device, dtype):
        self.shape = (cfg.num_layers, slots, cfg.num_kv_heads, cfg.head_dim)
        self.device, self.dtype = device, dtype
        self.k = self.v = None
        self.max_len = 0

    def ensure(self, max_len: int) -> None:
        if max_len <= self.max_len:
            return
        layers, slots, hkv, d = self.shape
        k = torch.empty(layers, slots, max_len, hkv, d, device=self.device, dtype=self.dtype)
        v = torch.empty_like(k)
        if self.k is not None:
            k[:, :, :self.max_len] = self.k
            v[:, :, :self.max_len] = self.v
        self.k, self.v, self.max_len = k, v, max_len

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()


class PrefillBatch:
    """One prompt at batch 1: K/V go to its prefix range; attention is causal over the prompt."""

    def __init__(self, pool: PrefixPool, handle: int):
        self.pool = pool
        start, length = pool.ranges[handle]
        self.span = slice(start, start + length)
        self.write_rows = torch.arange(start, start + length, device=pool.device)

    def write_cache(self, layer: int):
        return self.pool.k[layer], self.pool.v[layer]

    def attend(self, layer: int, q: torch.Tensor, scale: float) -> torch.Tensor:
        k, v = self.pool.k[layer, self.span], self.pool.v[layer, self.span]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0),
            is_causal=True, scale=scale, enable_gqa=True)
        return out.squeeze(0).transpose(0, 1)


class SuffixBatch:
    """Rows that each add one token to a slot's suffix: the token's K/V is written at suffix
    position suffix_lens - 1 of its slot, and the row attends to its group's prefix plus the
    first suffix_lens tokens of its slot's suffix (shared-prefix attention).

    Rows must be sorted by group; `groups` is a list of (prefix handle, row count) in that order.
    """

    def __init__(self, pool: PrefixPool, suffix: SuffixCache, groups, slot_ids: torch.Tensor,
                 suffix_lens: torch.Tensor):
        device = pool.device
        self.pool, self.suffix = pool, suffix
        counts = [count for _, count in groups]
        spans = [pool.ranges[handle] for handle, _ in groups]
        self.row_ptr = torch.tensor([0] + counts, device=device).cumsum(0).to(torch.int32)
        self.prefix_start = torch.tensor([s for s, _ in spans], device=device, dtype=torch.int32)
        self.prefix_len = torch.tensor([n for _, n in spans], device=device, dtype=torch.int32)
        self.slot_ids = slot_ids.to(device=device, dtype=torch.int32)
        self.suffix_lens = suffix_lens.to(device=device, dtype=torch.int32)
        self.write_rows = self.slot_ids.long() * suffix.max_len + self.suffix_lens.long() - 1

    def write_cache(self, layer: int):
        _, slots, hkv, d = self.suffix.shape
        flat = (slots * self.suffix.max_len, hkv, d)
        return self.suffix.k[layer].view(flat), self.suffix.v[layer].view(flat)

    def attend(self, layer: int, q: torch.Tensor, scale: float) -> torch.Tensor:
        return kernels.shared_prefix_attention(
            q, self.pool.k[layer], self.pool.v[layer], self.row_ptr, self.prefix_start, self.prefix_len,
            self.suffix.k[layer], self.suffix.v[layer], self.slot_ids, self.suffix_lens, scale)
