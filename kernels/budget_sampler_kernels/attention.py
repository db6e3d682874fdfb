"""Shared-prefix decode attention (Hydragen / cascade style): reference and Triton kernels.

Every query row belongs to a slot (its own suffix KV) and to a prompt group (the group's prefix KV,
stored once). Attention over [prefix; suffix] is split in two exact parts:

- prefix part: all query rows of a group (and all query heads of a KV head) are stacked into one
  matrix and multiplied against ONE copy of the group's prefix K/V — a matrix-matrix product
  instead of one matrix-vector product per sample;
- suffix part: each row attends to its own slot's suffix K/V (its generated tokens so far);
- merge: with out_i and lse_i = log sum_j exp(s_ij) of each part,
      lse = log(exp(lse_1) + exp(lse_2)),  out = exp(lse_1 - lse) out_1 + exp(lse_2 - lse) out_2,
  which equals softmax attention over the concatenation.

Layouts (one layer): q [B, H, D], rows sorted by group; row_ptr int [G+1] (rows of group g are
row_ptr[g]:row_ptr[g+1]). K/V live in paged caches [Hkv, num_blocks, block_size, D] (see
budget_sampler/cache.py): group g's prefix is prefix_lens[g] tokens in the blocks listed by
prefix_tables[g] (int [G, max_blocks]); row b's suffix is suffix_lens[b] tokens (0 allowed) in the
blocks listed by suffix_tables[b] (int [B, max_blocks]). Token t of a sequence sits at offset
t % block_size of block table[t // block_size]; table entries past a sequence's end are never read
for scores (the reference gathers them, so they must be valid block ids). Query head h reads KV
head h // (H // Hkv), as in HF.

The Triton path runs the two parts in ONE kernel with one online softmax, so no part's result
makes a round trip through global memory and no merge is launched. A program takes a tile of a
group's stacked query rows (its rows x the query heads of one KV head) and
- prefix part: streams the group's prefix K/V once for all of them (matrix-matrix products);
- suffix part: carries the same softmax state on over each row's own suffix K/V, gathered through
  the rows' own block tables; the rows' keys go into one matrix product and each stacked row keeps
  those of its own row (a block-diagonal mask), so each suffix key is read once per tile;
- writes the normalized output.
Why one kernel: three launches (prefix part, suffix part, merge) and their partial results were
most of the time at decode sizes (on an H200, 27 + 7 + ~10 us a layer for ~5 us of work). When the
tiles are too few to fill the GPU (small n), the keys are split across programs (the prefix and
every row's suffix alike); then each split writes a partial (out, lse) and a second, small launch
merges them exactly like the two parts above.
Every launch decision comes from tensor shapes, never from tensor values: no host sync, so the
decode step can be captured in a CUDA graph.

Two per-layer options (Gemma 2 / Gemma 3, Mistral-style windows), each a constexpr switch of the kernel
so layers without them run the plain code:
- soft-capping: scores s = softcap * tanh(q.k * scale / softcap) before the softmax;
- sliding window: a row whose query sits at position P + S - 1 (prefix length P, suffix length S)
  attends only to positions >= P + S - window, the last `window` positions including its own, which
  may cut into the shared prefix: prefix keys are masked per row, each suffix starts late.
KV blocks that fall out of a window are not freed: a block holds the token's K/V of every layer, and
the full-attention layers (every other Gemma 2 layer, one in six of Gemma 3) still read it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ._triton import sm_count, tl, triton


def _softmax_attend(s, v):
    """softmax(s) @ v and the log-sum-exp of s along the last axis; rows that are all -inf give
    out = 0, lse = -inf (one exp per score: cheaper than logsumexp followed by softmax)."""
    m = s.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(s.dtype).min)
    p = torch.exp(s - m)
    total = p.sum(dim=-1, keepdim=True)
    o = torch.matmul(p, v) / total.clamp_min(torch.finfo(s.dtype).tiny)
    return o, (m + torch.log(total)).squeeze(-1)


_workspaces: dict[tuple, torch.Tensor] = {}


def _workspace(name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
    """A flat buffer reused across calls. On CPU a fresh multi-MB tensor per layer and step is
    memory the allocator maps from the OS and page-faults in each time: it doubled the CPU
    decode step while the suffixes grew. CUDA's caching allocator needs none of this."""
    if like.device.type != "cpu":
        return torch.empty(numel, dtype=like.dtype, device=like.device)
    key = (name, like.dtype)
    if key not in _workspaces or _workspaces[key].numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
            _workspaces[key] = torch.empty(numel, dtype=like.dtype)
    return _workspaces[key][:numel]


def gather_blocks(cache: torch.Tensor, tables: torch.Tensor, length: int, workspace: str = "") -> torch.Tensor:
    """The first `length` tokens of each table's sequence, [Hkv, rows, tokens, D], from a paged cache
    [Hkv, num_blocks, block_size, D] and tables int [rows, max_blocks] (a view of the cache when
    one sequence sits in consecutive blocks, else a copy, into the named reusable workspace if one
    is given: valid until the next call that names it). Tokens past a sequence's own length up to
    the next block end come along; callers mask them."""
    hkv, num_blocks, bs, d = cache.shape
    nb = -(-length // bs)
    if tables.shape[0] == 1:  # one sequence (a prompt): consecutive blocks need no copy
        first = int(tables[0, 0])
        if torch.equal(tables[0, :nb], torch.arange(first, first + nb, dtype=tables.dtype, device=tables.device)):
            return cache[:, first:first + nb].reshape(hkv, 1, nb * bs, d)
    index = tables[:, :nb].flatten()
    out = _workspace(workspace, hkv * index.numel() * bs * d, cache) if workspace else None
    blocks = torch.index_select(cache.view(hkv, num_blocks, bs * d), 1, index,  # 5x advanced indexing
                                out=None if out is None else out.view(hkv, index.numel(), bs * d))
    return blocks.view(hkv, tables.shape[0], nb * bs, d)


def _scores(s, scale, softcap):
    """Raw q.k products to attention scores: scaled, then soft-capped (Gemma 2) if softcap is set."""
    s = s * scale
    return s if softcap is None else torch.tanh(s / softcap) * softcap


def prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, scale, softcap=None,
                         first=None):
    """Prefix part. `first` (int [B], optional): each row's first visible prefix position (its sliding
    window's start). Returns (out [B, H, D] float32, lse [B, H] float32)."""
    B, H, D = q.shape
    hkv = prefix_k.shape[0]
    ratio = H // hkv
    out = torch.empty(B, H, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(B, H, dtype=torch.float32, device=q.device)
    bounds, lens = row_ptr.tolist(), prefix_lens.tolist()
    # every group's prefix in one gather (a per-group gather costs a call per group and layer)
    longest = max(lens, default=0)
    keys, values = (gather_blocks(t, prefix_tables, longest, name) for t, name in ((prefix_k, "prefix k"),
                                                                                   (prefix_v, "prefix v")))
    for g in range(len(lens)):
        r0, r1 = bounds[g], bounds[g + 1]
        m, n = r1 - r0, lens[g]
        if m == 0:
            continue
        if n == 0:
            out[r0:r1], lse[r0:r1] = 0.0, float("-inf")
            continue
        k, v = keys[:, g, :n].float(), values[:, g, :n].float()  # [Hkv, L, D]
        qg = q[r0:r1].float().view(m, hkv, ratio, D).permute(1, 0, 2, 3).reshape(hkv, m * ratio, D)
        s = _scores(torch.bmm(qg, k.transpose(1, 2)), scale, softcap)  # [Hkv, m*ratio, L]
        if first is not None:  # stacked row i is row r0 + i // ratio
            early = torch.arange(n, device=q.device) < first[r0:r1].repeat_interleave(ratio).unsqueeze(1)
            s = s.masked_fill(early, float("-inf"))
        o, l = _softmax_attend(s, v)
        out[r0:r1] = o.view(hkv, m, ratio, D).permute(1, 0, 2, 3).reshape(m, H, D)
        lse[r0:r1] = l.view(hkv, m, ratio).permute(1, 0, 2).reshape(m, H)
    return out, lse


SUFFIX_BUCKET_ROWS = 64  # rows per length bucket of the suffix reference


def suffix_attention_ref(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap=None, window=None):
    """Suffix part; with a window, row b sees its last `window` suffix tokens at most. Rows with no
    suffix get out = 0 and lse = -inf. Past SUFFIX_BUCKET_ROWS rows,
    where padding every row to the longest would be over a quarter of the work, rows are taken in
    buckets of similar suffix length, each padded to its own longest: one padding made a step of
    samples refilled across prompts (lengths 1 to ~300, mean 79) cost 1.7x a step of one prompt's
    samples at the mean length."""
    B, H, D = q.shape
    if B <= SUFFIX_BUCKET_ROWS or 4 * int(suffix_lens.sum()) >= 3 * B * int(suffix_lens.max()):
        return _suffix_bucket(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap, window)
    out = torch.empty(B, H, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(B, H, dtype=torch.float32, device=q.device)
    order = torch.argsort(suffix_lens)
    for rows in order.split(SUFFIX_BUCKET_ROWS):
        out[rows], lse[rows] = _suffix_bucket(q[rows], suffix_k, suffix_v, suffix_tables[rows], suffix_lens[rows],
                                              scale, softcap, window)
    return out, lse


def _suffix_bucket(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap, window):
    B, H, D = q.shape
    hkv = suffix_k.shape[0]
    ratio = H // hkv
    t = int(suffix_lens.max()) if B else 0
    if t == 0:
        return (torch.zeros(B, H, D, dtype=torch.float32, device=q.device),
                torch.full((B, H), float("-inf"), dtype=torch.float32, device=q.device))
    k = gather_blocks(suffix_k, suffix_tables, t, "suffix k").float()  # [Hkv, B, T, D], T = t rounded up to blocks
    v = gather_blocks(suffix_v, suffix_tables, t, "suffix v").float()
    qg = q.float().view(B, hkv, ratio, D).transpose(0, 1)  # [Hkv, B, ratio, D]
    s = _scores(torch.matmul(qg, k.transpose(-1, -2)), scale, softcap)  # [Hkv, B, ratio, T]
    t, lens = torch.arange(k.shape[2], device=q.device).view(1, 1, 1, -1), suffix_lens.view(1, B, 1, 1)
    valid = t < lens if window is None else (t < lens) & (t >= lens - window)
    o, l = _softmax_attend(s.masked_fill(~valid, float("-inf")), v)
    return o.transpose(0, 1).reshape(B, H, D), l.transpose(0, 1).reshape(B, H)


def merge_attention_ref(out_a, lse_a, out_b, lse_b):
    """Exact merge of two attention parts over disjoint keys by their log-sum-exps."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.exp(lse_a - lse).unsqueeze(-1)
    w_b = torch.exp(lse_b - lse).unsqueeze(-1)
    return w_a * out_a + w_b * out_b, lse


def shared_prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap=None, window=None):
    """Prefix part + suffix part + merge. Returns out [B, H, D] in q's dtype."""
    first = None
    if window is not None:  # row b's query is at position P + S - 1: it sees positions >= P + S - window
        rows_per_group = (row_ptr[1:] - row_ptr[:-1]).long()
        first = torch.repeat_interleave(prefix_lens.long(), rows_per_group) + suffix_lens.long() - window
    out_p, lse_p = prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, scale, softcap,
                                        first)
    out_s, lse_s = suffix_attention_ref(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap, window)
    out, _ = merge_attention_ref(out_p, lse_p, out_s, lse_s)
    return out.to(q.dtype)


@triton.jit
def _split_range(length, split, n_splits, GRAIN: tl.constexpr, MIN: tl.constexpr):
    """Tokens [lo, hi) of one of n_splits splits of a sequence (hi <= lo: none), in whole GRAIN-token
    steps and at least MIN tokens: the split count is fixed before the lengths are known (a CUDA
    graph replays it for any prompt), so a short sequence leaves the later splits empty rather than
    cut thin (on an H200, 512-token prefixes in 11-16 splits took 17-19% longer than in 1-4)."""
    chunk = tl.maximum(tl.cdiv(tl.cdiv(length, n_splits), GRAIN) * GRAIN, MIN)
    lo = split * chunk
    return lo, tl.minimum(lo + chunk, length)


@triton.jit
def _load_keys(K, V, TABLE, t, ok, stride_kb, stride_kt, stride_vb, stride_vt, d, d_mask, PAGE: tl.constexpr):
    """K and V [N, BLOCK_D] of tokens t of paged sequences (K/V already point at one KV head): token t
    sits at offset t % PAGE of block TABLE[t // PAGE], where TABLE is one block table for all the
    keys or one per key. Keys that are not ok read as 0."""
    block = tl.load(TABLE + t // PAGE, mask=ok, other=0).to(tl.int64)
    offset = t % PAGE
    mask = ok[:, None] & d_mask[None, :]
    k = tl.load(K + block[:, None] * stride_kb + offset[:, None] * stride_kt + d[None, :], mask=mask, other=0.0)
    v = tl.load(V + block[:, None] * stride_vb + offset[:, None] * stride_vt + d[None, :], mask=mask, other=0.0)
    return k, v


@triton.jit
def _tanh(x):
    """tanh from one exp2 of -2|x| (it never overflows), in plain tl ops the interpreter runs too."""
    e = tl.exp2(-2.8853900817779268 * tl.abs(x))  # 2 log2(e)
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _attend(q, k, v, valid, acc, l, m, qk_scale, softcap, SOFTCAP: tl.constexpr, PRECISION: tl.constexpr):
    """One step of the online softmax of q [BLOCK_M, BLOCK_D] over keys k / values v [BLOCK_N, BLOCK_D],
    in base 2: scores s = q.k * qk_scale (qk_scale = scale * log2(e)), or with SOFTCAP
    s = softcap * tanh(q.k * qk_scale) (then qk_scale = scale / cap, softcap = cap * log2(e)), where valid, m = max s,
    l = sum 2^(s - m), acc = sum 2^(s - m) v, in float32. A row with no valid score yet keeps
    m = -inf, l = 0 and acc = 0 (its exponentials take 0 as reference, so nothing is NaN)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if SOFTCAP:
        s = softcap * _tanh(s)
    s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    ref = tl.where(m_new > float("-inf"), m_new, 0.0)
    alpha = tl.exp2(m - ref)
    p = tl.exp2(s - ref[:, None])
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, l * alpha + tl.sum(p, 1), m_new


@triton.jit
def _store_part(OUT, LSE, acc, l, m, row_ok, d_mask):
    """Write one split's partial result: out = acc / l and lse = m + log2(l); an empty part (no keys)
    writes only lse = -inf, and the merge never reads its out."""
    empty = l == 0.0
    tl.store(LSE, tl.where(empty, float("-inf"), m + tl.log2(tl.where(empty, 1.0, l))), mask=row_ok)
    out = acc / tl.where(empty, 1.0, l)[:, None]
    tl.store(OUT, out, mask=(row_ok & ~empty)[:, None] & d_mask[None, :])


@triton.jit
def _attention_kernel(Q, PREFIX_K, PREFIX_V, ROW_PTR, PREFIX_TABLES, PREFIX_LENS,
                      SUFFIX_K, SUFFIX_V, SUFFIX_TABLES, SUFFIX_LENS, OUT, LSE,
                      stride_qb, stride_qh, stride_pkh, stride_pkb, stride_pkt, stride_pvh, stride_pvb, stride_pvt,
                      stride_ptg, stride_skh, stride_skb, stride_skt, stride_svh, stride_svb, stride_svt, stride_stb,
                      stride_os, stride_ob, stride_oh, stride_ls, stride_lb, n_groups, n_kv_heads, n_splits, qk_scale,
                      softcap, window, RATIO: tl.constexpr, PREFIX_PAGE: tl.constexpr, SUFFIX_PAGE: tl.constexpr,
                      HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_G: tl.constexpr, PREFIX_MIN: tl.constexpr,
                      SUFFIX_MIN: tl.constexpr, SPLIT: tl.constexpr, SOFTCAP: tl.constexpr, WINDOW: tl.constexpr,
                      PRECISION: tl.constexpr):
    """BLOCK_M stacked query rows of one group (its rows x the RATIO query heads of one KV head)
    against [prefix; each row's suffix], one online softmax carried from the prefix part into the
    suffix part:
    - prefix part: the group's prefix K/V, read once for all the stacked rows (one block table);
    - suffix part: a step gathers BLOCK_S tokens of each of the tile's rows from the rows' own
      block tables (BLOCK_N keys). The rows' keys differ, but q @ K^T over all of them is still
      one matrix product, of which each stacked row keeps the block of its own row's keys (a
      block-diagonal mask): every suffix key is read once per tile, not once per query head, and
      the tensor cores do the row-wise dot products.
    Without SPLIT the program writes the normalized output. With SPLIT, program split takes one
    split of the prefix and one of each row's suffix (counted from the last split, so a short
    prefix and short suffixes fill different programs) and writes a partial (out, lse).
    With WINDOW a stacked row masks the prefix keys before its window's start (the tile's prefix
    loop starts at the earliest of its rows) and each row's suffix starts at its window's start."""
    # tile-major order: the first tiles' programs start first; the grid's bound has one tile more
    # per group (a CUDA graph's padded batch: one empty group per row), whose programs exit at once
    pid = tl.program_id(0)
    split = pid % n_splits
    kvh = pid // n_splits % n_kv_heads
    tile = pid // (n_splits * n_kv_heads)

    # which group owns this tile: group g has cdiv(rows_g * RATIO, BLOCK_M) tiles, in order
    g = tl.arange(0, BLOCK_G)
    g_first = tl.load(ROW_PTR + g, mask=g < n_groups, other=0)
    g_last = tl.load(ROW_PTR + g + 1, mask=g < n_groups, other=0)
    g_tiles = ((g_last - g_first) * RATIO + BLOCK_M - 1) // BLOCK_M
    group = tl.sum((tl.cumsum(g_tiles, 0) <= tile).to(tl.int32), 0)
    live = group < n_groups  # the grid is an upper bound on the number of tiles
    group = tl.minimum(group, n_groups - 1)
    tile -= tl.sum(tl.where(g < group, g_tiles, 0), 0)
    row0 = tl.load(ROW_PTR + group)
    n_rows = tl.where(live, tl.load(ROW_PTR + group + 1) - row0, 0)

    i = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # stacked row i: row i // RATIO of the group, head i % RATIO
    row_ok = i < n_rows * RATIO
    row = (row0 + i // RATIO).to(tl.int64)
    head = kvh * RATIO + i % RATIO
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(Q + row[:, None] * stride_qb + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_mask[None, :], other=0.0)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    j = tl.arange(0, BLOCK_N)

    # prefix part
    prefix_len = tl.where(live, tl.load(PREFIX_LENS + group), 0)
    lo, hi = _split_range(prefix_len, split, n_splits, BLOCK_N, PREFIX_MIN)
    if WINDOW:  # stacked row i sees prefix positions >= first[i]
        first = prefix_len + tl.load(SUFFIX_LENS + row, mask=row_ok, other=0) - window
        lo = tl.maximum(lo, tl.min(tl.where(row_ok, first, prefix_len), 0))
    table = PREFIX_TABLES + group.to(tl.int64) * stride_ptg
    for start in range(lo, hi, BLOCK_N):
        t = start + j
        ok = t < hi
        k, v = _load_keys(PREFIX_K + kvh * stride_pkh, PREFIX_V + kvh * stride_pvh, table, t, ok,
                          stride_pkb, stride_pkt, stride_pvb, stride_pvt, d, d_mask, PREFIX_PAGE)
        valid = ok[None, :]
        if WINDOW:
            valid = valid & (t[None, :] >= first[:, None])
        acc, l, m = _attend(q, k, v, valid, acc, l, m, qk_scale, softcap, SOFTCAP, PRECISION)

    # suffix part: key j of a step is token j % BLOCK_S (of this split's share) of the tile's row j // BLOCK_S
    key_row = tile * BLOCK_M // RATIO + j // BLOCK_S
    key_ok = (key_row < n_rows) & (key_row * RATIO < tile * BLOCK_M + BLOCK_M)
    key_b = (row0 + key_row).to(tl.int64)
    suffix_len = tl.load(SUFFIX_LENS + key_b, mask=key_ok, other=0)
    lo, hi = _split_range(suffix_len, n_splits - 1 - split, n_splits, BLOCK_S, SUFFIX_MIN)
    if WINDOW:  # a row's suffix tokens before its window's start are skipped
        lo = tl.maximum(lo, suffix_len - window)
    table = SUFFIX_TABLES + key_b * stride_stb
    for start in range(0, tl.max(hi - lo, 0), BLOCK_S):
        t = lo + start + j % BLOCK_S
        ok = key_ok & (t < hi)
        k, v = _load_keys(SUFFIX_K + kvh * stride_skh, SUFFIX_V + kvh * stride_svh, table, t, ok,
                          stride_skb, stride_skt, stride_svb, stride_svt, d, d_mask, SUFFIX_PAGE)
        # a stacked row keeps the keys of its own row (block-diagonal mask)
        own = (i // RATIO)[:, None] == tl.where(ok, key_row, -1)[None, :]
        acc, l, m = _attend(q, k, v, own, acc, l, m, qk_scale, softcap, SOFTCAP, PRECISION)

    if SPLIT:
        _store_part(OUT + split * stride_os + row[:, None] * stride_ob + head[:, None] * stride_oh + d[None, :],
                    LSE + split * stride_ls + row * stride_lb + head, acc, l, m, row_ok, d_mask)
    else:
        out = acc / tl.where(l == 0.0, 1.0, l)[:, None]  # a row without keys (never in the engine) gets 0
        tl.store(OUT + row[:, None] * stride_ob + head[:, None] * stride_oh + d[None, :],
                 out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & d_mask[None, :])


@triton.jit
def _merge_kernel(OUT, LSE, RESULT, stride_op, stride_ob, stride_oh, stride_lp, stride_lb,
                  stride_rb, stride_rh, n_parts, n_heads,
                  HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Merge: out = sum_i 2^(lse_i - lse) out_i with lse = log2 sum_i 2^lse_i, over the partial
    results of all splits of one row, for BLOCK_H of its heads."""
    b = tl.program_id(0).to(tl.int64)
    p = tl.arange(0, BLOCK_P)[:, None]
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(LSE + p * stride_lp + b * stride_lb + h[None, :], mask=(p < n_parts) & (h < n_heads)[None, :],
                  other=float("-inf"))  # [P, H]
    has_keys = lse > float("-inf")
    m = tl.max(lse, 0)
    w = tl.where(has_keys, tl.exp2(lse - tl.where(m > float("-inf"), m, 0.0)[None, :]), 0.0)
    out = tl.load(OUT + p[:, :, None] * stride_op + b * stride_ob + h[None, :, None] * stride_oh + d[None, None, :],
                  mask=has_keys[:, :, None] & (d < HEAD_DIM)[None, None, :], other=0.0)  # [P, H, D]
    total = tl.sum(w, 0)
    out = tl.sum(w[:, :, None] * out, 0) / tl.where(total > 0.0, total, 1.0)[:, None]
    tl.store(RESULT + b * stride_rb + h[:, None] * stride_rh + d[None, :], out.to(RESULT.dtype.element_ty),
             mask=(h < n_heads)[:, None] & (d < HEAD_DIM)[None, :])


LOG2E = 1.4426950408889634
BLOCK_N = 64  # keys per step of the online softmax
MAX_SPLITS = 16
PREFIX_MIN = 256  # prefix keys in a split at least (see _split_range)
SUFFIX_MIN_STEPS = 4  # steps of a row's suffix in a split at least


class LaunchPlan(NamedTuple):
    block_m: int  # stacked query rows per tile
    block_s: int  # suffix tokens per row and step (block_s x the rows a tile touches = BLOCK_N keys)
    splits: int  # 1: one launch writes the output; more: partial results, then the merge


def launch_plan(q, prefix_k, prefix_tables, suffix_k, suffix_tables) -> LaunchPlan:
    """Tiles and splits of `shared_prefix_attention_triton` for these shapes. Every choice comes
    from tensor shapes, never from values: no host sync, so the decode step can be captured in a
    CUDA graph. Splits are counted from the tiles that hold rows, not from the grid's bound: a CUDA
    graph's padded batch has one (empty) group per row, and eager and replayed steps must split
    alike to round alike."""
    B, H, _ = q.shape
    hkv = prefix_k.shape[0]
    ratio = H // hkv
    block_m = min(64, max(16, triton.next_power_of_2(B * ratio)))
    # rows a tile touches: block_m / ratio when tiles start on row boundaries, else up to 2 more
    rows = block_m // ratio if block_m % ratio == 0 else min(block_m, (block_m - 1) // ratio + 2)
    block_s = BLOCK_N // triton.next_power_of_2(rows)
    programs = max(1, triton.cdiv(B * ratio, block_m) * hkv)
    target = sm_count(q.device)
    if programs >= target:
        return LaunchPlan(block_m, block_s, 1)
    # fewer programs than SMs: split the keys, one program per SM (each split costs a float32
    # partial result per row and head), but no more splits than the tables' capacity can fill: the
    # prefix fills splits from the first, the suffixes from the last
    fill = (triton.cdiv(prefix_tables.shape[1] * prefix_k.shape[2], PREFIX_MIN)
            + triton.cdiv(suffix_tables.shape[1] * suffix_k.shape[2], SUFFIX_MIN_STEPS * block_s))
    return LaunchPlan(block_m, block_s, max(1, min(triton.cdiv(target, programs), fill, MAX_SPLITS)))


def shared_prefix_attention_triton(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                   suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap=None, window=None, *,
                                   splits: Optional[int] = None):
    """Same contract as `shared_prefix_attention_ref`. `splits` overrides how many parts the keys
    are split into (default: `launch_plan`'s)."""
    B, H, D = q.shape
    hkv = prefix_k.shape[0]
    ratio = H // hkv
    n_groups = row_ptr.shape[0] - 1
    out = torch.empty(B, H, D, dtype=q.dtype, device=q.device)
    if B == 0:
        return out
    for name, t in (("q", q), ("prefix_k", prefix_k), ("prefix_v", prefix_v), ("suffix_k", suffix_k),
                    ("suffix_v", suffix_v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} has stride {t.stride(-1)} along head_dim; it must be 1")
    plan = launch_plan(q, prefix_k, prefix_tables, suffix_k, suffix_tables)
    n_splits = splits or plan.splits
    block_d = max(16, triton.next_power_of_2(D))
    if n_splits == 1:  # the kernel writes the output
        parts_out, parts_lse, part_strides = out, out, (0, out.stride(0), out.stride(1), 0, 0)
    else:
        parts_out = torch.empty(n_splits, B, H, D, dtype=torch.float32, device=q.device)
        parts_lse = torch.empty(n_splits, B, H, dtype=torch.float32, device=q.device)
        part_strides = (*parts_out.stride()[:3], *parts_lse.stride()[:2])
    # sum over groups of cdiv(rows * ratio, block_m) is below this bound, known without a sync
    tiles = triton.cdiv(B * ratio, plan.block_m) + n_groups
    _attention_kernel[(tiles * hkv * n_splits,)](
        q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, suffix_k, suffix_v, suffix_tables, suffix_lens,
        parts_out, parts_lse, q.stride(0), q.stride(1), *prefix_k.stride()[:3], *prefix_v.stride()[:3],
        prefix_tables.stride(0), *suffix_k.stride()[:3], *suffix_v.stride()[:3], suffix_tables.stride(0),
        *part_strides, n_groups, hkv, n_splits, scale * LOG2E if softcap is None else scale / softcap,
        (softcap or 0.0) * LOG2E, window or 0,
        RATIO=ratio, PREFIX_PAGE=prefix_k.shape[2], SUFFIX_PAGE=suffix_k.shape[2], HEAD_DIM=D,
        BLOCK_M=plan.block_m, BLOCK_N=BLOCK_N, BLOCK_S=plan.block_s, BLOCK_D=block_d,
        BLOCK_G=triton.next_power_of_2(max(n_groups, 1)), PREFIX_MIN=PREFIX_MIN,
        SUFFIX_MIN=SUFFIX_MIN_STEPS * plan.block_s, SPLIT=n_splits > 1, SOFTCAP=softcap is not None,
        WINDOW=window is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",  # tf32 only ever applies to float32
        num_warps=4)
    if n_splits > 1:
        block_p = triton.next_power_of_2(n_splits)
        # few heads per program: one program per row (12 heads) left the merge latency-bound, 13 us
        # per layer at n=256 on an H200
        block_h = min(triton.next_power_of_2(H), max(1, 2048 // (block_p * block_d)))
        _merge_kernel[(B, triton.cdiv(H, block_h))](
            parts_out, parts_lse, out, *part_strides, out.stride(0), out.stride(1), n_splits, H,
            HEAD_DIM=D, BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4)
    return out
