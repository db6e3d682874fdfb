"""Paged KV cache (vLLM's blocks) under one memory budget, with Hydragen's shared prefix on top.

All K/V live in one pool of fixed-size blocks per layer: K and V are
[layers, kv_heads, num_blocks, block_size, head_dim]. A prompt's KV goes to blocks of its own,
written once by its prefill and read by all of its samples, so its memory does not depend on n; each
sample's generated tokens go to blocks taken one at a time as it grows and returned when it finishes.
Prefix and suffix blocks come from the same pool, so one budget bounds both.

Per layer and KV head a block table gathers to one contiguous [rows, tokens, head_dim] operand (the
CPU reference's matmul), and a token's head_dim is contiguous (the GPU kernels' loads). Block 0 is a
scratch block that is never handed out: unused block-table entries point at it, and padded rows of a
captured decode step write there.

Two batch views tell the model where to write K/V and how to attend: PrefillBatch (one prompt,
causal attention over itself) and SuffixBatch (rows that each add one token to a sample's suffix
after its group's prefix: decode steps, preemption recompute and teacher-forced scoring). A layer
may soft-cap its scores or attend within a sliding window (see the kernels); a block's K/V serves
every layer, so blocks stay allocated while a full-attention layer may still read them: a window
saves reads, not memory.
"""
from __future__ import annotations

import torch

import budget_sampler_kernels as kernels

from .models.llama import ModelConfig


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_tables(blocks: list[list[int]], width: int) -> torch.Tensor:
    """Block lists as int32 rows [len(blocks), width], padded with the scratch block 0 (on the host)."""
    tables = torch.zeros(len(blocks), width, dtype=torch.int32)
    for i, row in enumerate(blocks):
        tables[i, :len(row)] = torch.tensor(row, dtype=torch.int32)
    return tables


class BlockPool:
    """The K/V blocks and their free list; the engine decides who holds which block."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, device, dtype):
        self.block_size, self.num_blocks = block_size, num_blocks
        shape = (cfg.num_layers, cfg.num_kv_heads, num_blocks, block_size, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.device = self.k.device
        self._free = list(range(num_blocks - 1, 0, -1))  # a stack: low block ids go out first

    @property
    def capacity(self) -> int:
        """Blocks that can be handed out (all but the scratch block)."""
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.capacity - self.num_free

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise RuntimeError(f"KV block pool exhausted: {count} blocks asked, {len(self._free)} free")
        return [self._free.pop() for _ in range(count)]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))

    def rows(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of one layer as flat token rows [num_blocks * block_size, kv_heads, head_dim]
        (strided views): what the RoPE + KV-write op addresses, row = block * block_size + offset."""
        def view(t):
            hkv, nb, bs, d = t[layer].shape
            return t[layer].view(hkv, nb * bs, d).transpose(0, 1)
        return view(self.k), view(self.v)

    def token_rows(self, tables: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Flat row of token `positions[i]` of the sequence whose block table is `tables[i]`."""
        bs = self.block_size
        block = tables.gather(1, (positions // bs).long().unsqueeze(1)).squeeze(1)
        return block.long() * bs + positions.long() % bs


class PrefillBatch:
    """One prompt at batch 1: K/V go to its prefix blocks; attention is causal over the prompt."""

    def __init__(self, pool: BlockPool, blocks: list[int], length: int):
        self.pool, self.length = pool, length
        self.table = torch.tensor([blocks], device=pool.device, dtype=torch.int32)
        self.write_rows = pool.token_rows(self.table.expand(length, -1),
                                          torch.arange(length, device=pool.device))

    def write_cache(self, layer: int):
        return self.pool.rows(layer)

    def attend(self, layer: int, q: torch.Tensor, scale: float, softcap=None, window=None) -> torch.Tensor:
        return kernels.prefill_attention(q, self.pool.k[layer], self.pool.v[layer], self.table, scale, softcap,
                                         window)


class SuffixBatch:
    """Rows that each add one token to a sample's suffix: the token's K/V is written at suffix
    position suffix_lens - 1 of the row's block table, and the row attends to its group's prefix
    plus the first suffix_lens tokens of its suffix (shared-prefix attention).

    Rows are sorted by group: group g (prefix_tables[g], prefix_lens[g]) owns rows
    row_ptr[g]:row_ptr[g+1]. Every argument is a device tensor, so building this never syncs.
    The prefix may live in another pool than the suffix (scoring keeps its suffixes apart).
    """

    def __init__(self, prefix_pool: BlockPool, suffix_pool: BlockPool, row_ptr, prefix_tables, prefix_lens,
                 suffix_tables, suffix_lens):
        self.prefix_pool, self.suffix_pool = prefix_pool, suffix_pool
        self.row_ptr, self.prefix_tables, self.prefix_lens = row_ptr, prefix_tables, prefix_lens
        self.suffix_tables, self.suffix_lens = suffix_tables, suffix_lens
        self.write_rows = suffix_pool.token_rows(suffix_tables, suffix_lens - 1)

    def write_cache(self, layer: int):
        return self.suffix_pool.rows(layer)

    def attend(self, layer: int, q: torch.Tensor, scale: float, softcap=None, window=None) -> torch.Tensor:
        p, s = self.prefix_pool, self.suffix_pool
        return kernels.shared_prefix_attention(
            q, p.k[layer], p.v[layer], self.row_ptr, self.prefix_tables, self.prefix_lens,
            s.k[layer], s.v[layer], self.suffix_tables, self.suffix_lens, scale, softcap, window)
