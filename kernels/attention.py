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
sampler/cache.py): group g's prefix is prefix_lens[g] tokens in the blocks listed by
prefix_tables[g] (int [G, max_blocks]); row b's suffix is suffix_lens[b] tokens (0 allowed) in the
blocks listed by suffix_tables[b] (int [B, max_blocks]). Token t of a sequence sits at offset
t % block_size of block table[t // block_size]; table entries past a sequence's end are never read
for scores (the reference gathers them, so they must be valid block ids). Query head h reads KV
head h // (H // Hkv), as in HF.

The Triton path runs three kernels: prefix part (one program per tile of a group's stacked query
rows x KV head x split of the prefix), suffix part (one program per row x KV head x split of its
suffix), and merge (one program per row and block of heads, over all the partial results).
Splitting the keys keeps the GPU busy when there are few tiles; the partial results of the splits
are merged exactly like the two parts.
Every launch decision comes from tensor shapes, never from tensor values: no host sync, so the
decode step can be captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Optional

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


def prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, scale):
    """Prefix part. Returns (out [B, H, D] float32, lse [B, H] float32)."""
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
        s = torch.bmm(qg, k.transpose(1, 2)) * scale  # [Hkv, m*ratio, L]
        o, l = _softmax_attend(s, v)
        out[r0:r1] = o.view(hkv, m, ratio, D).permute(1, 0, 2, 3).reshape(m, H, D)
        lse[r0:r1] = l.view(hkv, m, ratio).permute(1, 0, 2).reshape(m, H)
    return out, lse


def suffix_attention_ref(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale):
    """Suffix part. Rows with no suffix get out = 0 and lse = -inf."""
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
    s = torch.matmul(qg, k.transpose(-1, -2)) * scale  # [Hkv, B, ratio, T]
    valid = torch.arange(k.shape[2], device=q.device).view(1, 1, 1, -1) < suffix_lens.view(1, B, 1, 1)
    o, l = _softmax_attend(s.masked_fill(~valid, float("-inf")), v)
    return o.transpose(0, 1).reshape(B, H, D), l.transpose(0, 1).reshape(B, H)


def merge_attention_ref(out_a, lse_a, out_b, lse_b):
    """Exact merge of two attention parts over disjoint keys by their log-sum-exps."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.exp(lse_a - lse).unsqueeze(-1)
    w_b = torch.exp(lse_b - lse).unsqueeze(-1)
    return w_a * out_a + w_b * out_b, lse


def shared_prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                suffix_k, suffix_v, suffix_tables, suffix_lens, scale):
    """Prefix part + suffix part + merge. Returns out [B, H, D] in q's dtype."""
    out_p, lse_p = prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, scale)
    out_s, lse_s = suffix_attention_ref(q, suffix_k, suffix_v, suffix_tables, suffix_lens, scale)
    out, _ = merge_attention_ref(out_p, lse_p, out_s, lse_s)
    return out.to(q.dtype)


@triton.jit
def _attend(q, K, V, TABLE, stride_kb, stride_kt, stride_vb, stride_vt, lo, hi, qk_scale, d, d_mask,
            PAGE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            PRECISION: tl.constexpr):
    """Online softmax of q [BLOCK_M, BLOCK_D] over tokens lo:hi of one sequence of a paged K/V
    (token t at block TABLE[t // PAGE], offset t % PAGE; K/V already point at one KV head).

    Returns (acc, l, m) in base 2: scores are s = q.k * qk_scale with qk_scale = scale * log2(e),
    m = max s, l = sum 2^(s - m), acc = sum 2^(s - m) v. Accumulation is float32.
    """
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    n = tl.arange(0, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        cols = start + n
        col_ok = cols < hi
        kv_mask = col_ok[:, None] & d_mask[None, :]
        block = tl.load(TABLE + cols // PAGE, mask=col_ok, other=0).to(tl.int64)
        offset = cols % PAGE
        k = tl.load(K + block[:, None] * stride_kb + offset[:, None] * stride_kt + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + block[:, None] * stride_vb + offset[:, None] * stride_vt + d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))  # finite: every chunk has at least one valid key
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    return acc, l, m


@triton.jit
def _split_range(length, split, n_splits, BLOCK_N: tl.constexpr):
    """Keys [lo, hi) of one of n_splits splits of a sequence, in whole BLOCK_N chunks of at least
    256 keys: the split count is fixed before the lengths are known (a CUDA graph replays it
    for any prompt), so a short sequence leaves the later splits empty rather than cut thin (on an
    H200, 512-token prefixes in 11-16 splits took 17-19% longer than in 1-4)."""
    chunk = tl.maximum(tl.cdiv(tl.cdiv(length, n_splits), BLOCK_N) * BLOCK_N, 256)
    lo = split * chunk
    return lo, tl.minimum(lo + chunk, length)


@triton.jit
def _store_part(OUT, LSE, acc, l, m, row_ok, d_mask):
    """Write one partial result: out = acc / l and lse = m + log2(l); an empty part (no keys) writes
    only lse = -inf, and the merge never reads its out."""
    empty = l == 0.0
    tl.store(LSE, tl.where(empty, float("-inf"), m + tl.log2(tl.where(empty, 1.0, l))), mask=row_ok)
    out = acc / tl.where(empty, 1.0, l)[:, None]
    tl.store(OUT, out, mask=(row_ok & ~empty)[:, None] & d_mask[None, :])


@triton.jit
def _prefix_part_kernel(Q, K, V, ROW_PTR, PREFIX_TABLES, PREFIX_LENS, OUT, LSE,
                        stride_qb, stride_qh, stride_kh, stride_kb, stride_kt, stride_vh, stride_vb, stride_vt,
                        stride_tg, stride_op, stride_ob, stride_oh, stride_lp, stride_lb,
                        n_groups, qk_scale,
                        RATIO: tl.constexpr, PAGE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_G: tl.constexpr,
                        PRECISION: tl.constexpr):
    """Prefix part: BLOCK_M stacked query rows of one group (its rows x the RATIO query heads of
    one KV head) against one split of the group's prefix K/V, read once for all of them through
    the group's block table."""
    tile = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    n_splits = tl.num_programs(2)

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

    i = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = i < n_rows * RATIO
    row = (row0 + i // RATIO).to(tl.int64)
    head = kvh * RATIO + i % RATIO
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(Q + row[:, None] * stride_qb + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_mask[None, :], other=0.0)

    length = tl.where(live, tl.load(PREFIX_LENS + group), 0)
    lo, hi = _split_range(length, split, n_splits, BLOCK_N)
    acc, l, m = _attend(q, K + kvh * stride_kh, V + kvh * stride_vh, PREFIX_TABLES + group.to(tl.int64) * stride_tg,
                        stride_kb, stride_kt, stride_vb, stride_vt, lo, hi, qk_scale, d, d_mask,
                        PAGE, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    _store_part(OUT + split * stride_op + row[:, None] * stride_ob + head[:, None] * stride_oh + d[None, :],
                LSE + split * stride_lp + row * stride_lb + head, acc, l, m, row_ok, d_mask)


@triton.jit
def _suffix_part_kernel(Q, K, V, SUFFIX_TABLES, SUFFIX_LENS, OUT, LSE,
                        stride_qb, stride_qh, stride_kh, stride_kb, stride_kt, stride_vh, stride_vb, stride_vt,
                        stride_tb, stride_op, stride_ob, stride_oh, stride_lp, stride_lb, first_part, qk_scale,
                        RATIO: tl.constexpr, PAGE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """Suffix part: the RATIO query heads of one row and one KV head against one split of the
    row's own suffix K/V, read through the row's block table."""
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    n_splits = tl.num_programs(2)

    r = tl.arange(0, BLOCK_R)
    row_ok = r < RATIO
    head = kvh * RATIO + r
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q = tl.load(Q + b * stride_qb + head[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None] & d_mask[None, :], other=0.0)

    length = tl.load(SUFFIX_LENS + b)
    lo, hi = _split_range(length, split, n_splits, BLOCK_N)
    acc, l, m = _attend(q, K + kvh * stride_kh, V + kvh * stride_vh, SUFFIX_TABLES + b * stride_tb,
                        stride_kb, stride_kt, stride_vb, stride_vt, lo, hi, qk_scale, d, d_mask,
                        PAGE, BLOCK_R, BLOCK_N, BLOCK_D, PRECISION)
    part = first_part + split
    _store_part(OUT + part * stride_op + b * stride_ob + head[:, None] * stride_oh + d[None, :],
                LSE + part * stride_lp + b * stride_lb + head, acc, l, m, row_ok, d_mask)


@triton.jit
def _merge_kernel(OUT, LSE, RESULT, stride_op, stride_ob, stride_oh, stride_lp, stride_lb,
                  stride_rb, stride_rh, n_parts, n_heads,
                  HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Merge: out = sum_i 2^(lse_i - lse) out_i with lse = log2 sum_i 2^lse_i, over all parts
    (prefix splits and suffix splits) of one row, for BLOCK_H of its heads."""
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


def shared_prefix_attention_triton(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                   suffix_k, suffix_v, suffix_tables, suffix_lens, scale, *,
                                   prefix_splits: Optional[int] = None, suffix_splits: Optional[int] = None):
    """Same contract as `shared_prefix_attention_ref`. `prefix_splits` / `suffix_splits` override
    how many parts the keys are split into (default: enough programs to fill the GPU)."""
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
    block_d = max(16, triton.next_power_of_2(D))
    block_m = min(64, max(16, triton.next_power_of_2(B * ratio)))
    row_tiles = triton.cdiv(B * ratio, block_m)
    # sum over groups of cdiv(rows * ratio, block_m) is below this bound, known without a sync
    prefix_tiles = row_tiles + n_groups
    # splits from the tiles that hold rows, not the grid's bound: a CUDA graph's padded batch has
    # one (empty) group per row, and eager and replayed steps must split alike to round alike
    ps = prefix_splits or _num_splits(row_tiles * hkv, prefix_tables.shape[1] * prefix_k.shape[2], q.device)
    ss = suffix_splits or _num_splits(B * hkv, suffix_tables.shape[1] * suffix_k.shape[2], q.device)
    parts_out = torch.empty(ps + ss, B, H, D, dtype=torch.float32, device=q.device)
    parts_lse = torch.empty(ps + ss, B, H, dtype=torch.float32, device=q.device)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"  # tf32 only ever applies to float32
    qk_scale = scale * LOG2E
    part_strides = (parts_out.stride(0), parts_out.stride(1), parts_out.stride(2),
                    parts_lse.stride(0), parts_lse.stride(1))

    # prefix part
    _prefix_part_kernel[(prefix_tiles, hkv, ps)](
        q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens, parts_out, parts_lse,
        q.stride(0), q.stride(1), *prefix_k.stride()[:3], *prefix_v.stride()[:3], prefix_tables.stride(0),
        *part_strides, n_groups, qk_scale,
        RATIO=ratio, PAGE=prefix_k.shape[2], HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_D=block_d,
        BLOCK_G=triton.next_power_of_2(max(n_groups, 1)), PRECISION=precision, num_warps=4)
    # suffix part
    _suffix_part_kernel[(B, hkv, ss)](
        q, suffix_k, suffix_v, suffix_tables, suffix_lens, parts_out, parts_lse,
        q.stride(0), q.stride(1), *suffix_k.stride()[:3], *suffix_v.stride()[:3], suffix_tables.stride(0),
        *part_strides, ps, qk_scale,
        RATIO=ratio, PAGE=suffix_k.shape[2], HEAD_DIM=D, BLOCK_R=max(16, triton.next_power_of_2(ratio)),
        BLOCK_N=BLOCK_N, BLOCK_D=block_d, PRECISION=precision, num_warps=4)
    # merge
    block_p = triton.next_power_of_2(ps + ss)
    # few heads per program: one program per row (12 heads) left the merge latency-bound, 13 us per
    # layer at n=256 on an H200
    block_h = min(triton.next_power_of_2(H), max(1, 2048 // (block_p * block_d)))
    _merge_kernel[(B, triton.cdiv(H, block_h))](
        parts_out, parts_lse, out, *part_strides, out.stride(0), out.stride(1), ps + ss, H,
        HEAD_DIM=D, BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4)
    return out


def _num_splits(programs: int, max_len: int, device: torch.device) -> int:
    """Split the keys when there are fewer programs than SMs; 1 elsewhere. Each split costs a
    float32 partial result per row and head, so the target is one program per SM, not more.
    max_len bounds the keys a program may get (a block table's capacity, known without a sync)."""
    target = sm_count(device)
    if programs >= target:
        return 1
    return max(1, min(triton.cdiv(target, programs), triton.cdiv(max_len, BLOCK_N), MAX_SPLITS))
