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
row_ptr[g]:row_ptr[g+1]); prefix_k/v [P, Hkv, D] pool with group g at prefix_start[g] for
prefix_len[g] tokens; suffix_k/v [S, T, Hkv, D]; slot_ids int [B]; suffix_lens int [B] (valid
suffix tokens of each row, 0 allowed). Query head h reads KV head h // (H // Hkv), as in HF.
"""
from __future__ import annotations

import torch


def prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_start, prefix_len, scale):
    """Prefix part. Returns (out [B, H, D] float32, lse [B, H] float32)."""
    B, H, D = q.shape
    hkv = prefix_k.shape[1]
    ratio = H // hkv
    out = torch.empty(B, H, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(B, H, dtype=torch.float32, device=q.device)
    bounds = row_ptr.tolist()
    starts, lens = prefix_start.tolist(), prefix_len.tolist()
    for g in range(len(starts)):
        r0, r1 = bounds[g], bounds[g + 1]
        m = r1 - r0
        if m == 0:
            continue
        k = prefix_k[starts[g]:starts[g] + lens[g]].transpose(0, 1).float()  # [Hkv, L, D]
        v = prefix_v[starts[g]:starts[g] + lens[g]].transpose(0, 1).float()
        qg = q[r0:r1].float().view(m, hkv, ratio, D).permute(1, 0, 2, 3).reshape(hkv, m * ratio, D)
        s = torch.bmm(qg, k.transpose(1, 2)) * scale  # [Hkv, m*ratio, L]
        l = torch.logsumexp(s, dim=-1)
        o = torch.bmm(torch.exp(s - l.unsqueeze(-1)), v)
        out[r0:r1] = o.view(hkv, m, ratio, D).permute(1, 0, 2, 3).reshape(m, H, D)
        lse[r0:r1] = l.view(hkv, m, ratio).permute(1, 0, 2).reshape(m, H)
    return out, lse


def suffix_attention_ref(q, suffix_k, suffix_v, slot_ids, suffix_lens, scale):
    """Suffix part. Rows with no suffix get out = 0 and lse = -inf."""
    B, H, D = q.shape
    hkv = suffix_k.shape[2]
    ratio = H // hkv
    t = int(suffix_lens.max()) if B else 0
    if t == 0:
        return (torch.zeros(B, H, D, dtype=torch.float32, device=q.device),
                torch.full((B, H), float("-inf"), dtype=torch.float32, device=q.device))
    first = int(slot_ids[0])
    if torch.equal(slot_ids, torch.arange(first, first + B, device=slot_ids.device)):
        k, v = suffix_k[first:first + B, :t], suffix_v[first:first + B, :t]  # no copy
    else:
        k, v = suffix_k[slot_ids, :t], suffix_v[slot_ids, :t]
    k = k.permute(0, 2, 3, 1).float()  # [B, Hkv, D, t]
    v = v.permute(0, 2, 1, 3).float()  # [B, Hkv, t, D]
    qg = q.float().view(B, hkv, ratio, D)
    s = torch.matmul(qg, k) * scale  # [B, Hkv, ratio, t]
    valid = torch.arange(t, device=q.device).view(1, 1, 1, t) < suffix_lens.view(B, 1, 1, 1)
    s = s.masked_fill(~valid, float("-inf"))
    l = torch.logsumexp(s, dim=-1)  # -inf where the row has no suffix
    p = torch.exp(s - torch.where(torch.isinf(l), 0.0, l).unsqueeze(-1))
    o = torch.matmul(p, v)
    return o.reshape(B, H, D), l.reshape(B, H)


def merge_attention_ref(out_a, lse_a, out_b, lse_b):
    """Exact merge of two attention parts over disjoint keys by their log-sum-exps."""
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.exp(lse_a - lse).unsqueeze(-1)
    w_b = torch.exp(lse_b - lse).unsqueeze(-1)
    return w_a * out_a + w_b * out_b, lse


def shared_prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_start, prefix_len,
                                suffix_k, suffix_v, slot_ids, suffix_lens, scale):
    """Prefix part + suffix part + merge. Returns out [B, H, D] in q's dtype."""
    out_p, lse_p = prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_start, prefix_len, scale)
    out_s, lse_s = suffix_attention_ref(q, suffix_k, suffix_v, slot_ids, suffix_lens, scale)
    out, _ = merge_attention_ref(out_p, lse_p, out_s, lse_s)
    return out.to(q.dtype)
