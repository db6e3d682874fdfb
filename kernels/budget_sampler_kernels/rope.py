"""Rotary position embedding fused with the write of K and V into a KV cache: reference and kernel.

The cache is addressed by flat rows: a cache tensor viewed as [rows, kv_heads, head_dim] and one
destination row per token, so the same op fills a prompt's prefix blocks (prefill) and each
sample's suffix blocks (decode) of the one block pool. cos/sin are Hugging Face's
[tokens, rotary_dim] tables (halves duplicated). A rotary_dim below head_dim (Phi-3's
partial_rotary_factor) rotates the first rotary_dim dimensions of each head, pairing i with
i + rotary_dim / 2, and leaves the rest as they are.
"""
from __future__ import annotations

import torch

from ._triton import tl, triton


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [tokens, heads, head_dim]; cos/sin: [tokens, rotary_dim]."""
    cos = cos.to(x.dtype).unsqueeze(1)
    sin = sin.to(x.dtype).unsqueeze(1)
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat((x[..., :r] * cos + _rotate_half(x[..., :r]) * sin, x[..., r:]), dim=-1)
    return x * cos + _rotate_half(x) * sin


def rope_write_kv_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                      sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      cache_rows: torch.Tensor) -> torch.Tensor:
    """Rotate q and k; store rotated k and v at cache rows `cache_rows`; return rotated q.

    q: [N, H, D]; k, v: [N, Hkv, D]; k_cache, v_cache: [R, Hkv, D]; cache_rows: int [N].
    """
    # index_copy_, not k_cache[rows] = ...: indexed assignment into a strided cache view cost 3x
    # more per call under inference mode on CPU
    k_cache.index_copy_(0, cache_rows, rope_ref(k, cos, sin).to(k_cache.dtype))
    v_cache.index_copy_(0, cache_rows, v.to(v_cache.dtype))
    return rope_ref(q, cos, sin)


@triton.jit
def _rotate(ptrs, mask, cos1, cos2, sin1, sin2, HALF: tl.constexpr):
    """x * cos + rotate_half(x) * sin in float32, as its two halves; ptrs address the first half."""
    x1 = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(ptrs + HALF, mask=mask, other=0.0).to(tl.float32)
    return x1 * cos1 - x2 * sin1, x2 * cos2 + x1 * sin2


@triton.jit
def _rope_write_kv_kernel(Q, K, V, COS, SIN, K_CACHE, V_CACHE, ROWS, Q_OUT,
                          stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh,
                          stride_cn, stride_sn, stride_kcr, stride_kch, stride_vcr, stride_vch,
                          stride_on, stride_oh, n_heads, n_kv_heads,
                          HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
                          PASS: tl.constexpr, BLOCK_PASS: tl.constexpr):
    """One token per program: rotate its q and k, store q, and write k and v to its cache row. The
    first 2 * HALF dimensions of a head rotate; the PASS dimensions after them are copied."""
    n = tl.program_id(0).to(tl.int64)
    row = tl.load(ROWS + n).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_HALF)[None, :]
    q_mask = (h < n_heads) & (d < HALF)
    kv_mask = (h < n_kv_heads) & (d < HALF)
    # HF casts the tables to the activations' dtype before multiplying
    dt = Q.dtype.element_ty
    cos1 = tl.load(COS + n * stride_cn + d, mask=d < HALF, other=0.0).to(dt).to(tl.float32)
    cos2 = tl.load(COS + n * stride_cn + HALF + d, mask=d < HALF, other=0.0).to(dt).to(tl.float32)
    sin1 = tl.load(SIN + n * stride_sn + d, mask=d < HALF, other=0.0).to(dt).to(tl.float32)
    sin2 = tl.load(SIN + n * stride_sn + HALF + d, mask=d < HALF, other=0.0).to(dt).to(tl.float32)

    o1, o2 = _rotate(Q + n * stride_qn + h * stride_qh + d, q_mask, cos1, cos2, sin1, sin2, HALF)
    dst = Q_OUT + n * stride_on + h * stride_oh + d
    tl.store(dst, o1.to(Q_OUT.dtype.element_ty), mask=q_mask)
    tl.store(dst + HALF, o2.to(Q_OUT.dtype.element_ty), mask=q_mask)

    o1, o2 = _rotate(K + n * stride_kn + h * stride_kh + d, kv_mask, cos1, cos2, sin1, sin2, HALF)
    dst = K_CACHE + row * stride_kcr + h * stride_kch + d
    tl.store(dst, o1.to(K_CACHE.dtype.element_ty), mask=kv_mask)
    tl.store(dst + HALF, o2.to(K_CACHE.dtype.element_ty), mask=kv_mask)

    src = V + n * stride_vn + h * stride_vh + d
    dst = V_CACHE + row * stride_vcr + h * stride_vch + d
    tl.store(dst, tl.load(src, mask=kv_mask).to(V_CACHE.dtype.element_ty), mask=kv_mask)
    tl.store(dst + HALF, tl.load(src + HALF, mask=kv_mask).to(V_CACHE.dtype.element_ty), mask=kv_mask)

    if PASS > 0:  # partial rotary: the dimensions past the rotated ones, as they are
        p = 2 * HALF + tl.arange(0, BLOCK_PASS)[None, :]
        q_mask = (h < n_heads) & (p < 2 * HALF + PASS)
        kv_mask = (h < n_kv_heads) & (p < 2 * HALF + PASS)
        x = tl.load(Q + n * stride_qn + h * stride_qh + p, mask=q_mask)
        tl.store(Q_OUT + n * stride_on + h * stride_oh + p, x.to(Q_OUT.dtype.element_ty), mask=q_mask)
        x = tl.load(K + n * stride_kn + h * stride_kh + p, mask=kv_mask)
        tl.store(K_CACHE + row * stride_kcr + h * stride_kch + p, x.to(K_CACHE.dtype.element_ty), mask=kv_mask)
        x = tl.load(V + n * stride_vn + h * stride_vh + p, mask=kv_mask)
        tl.store(V_CACHE + row * stride_vcr + h * stride_vch + p, x.to(V_CACHE.dtype.element_ty), mask=kv_mask)


def rope_write_kv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         cache_rows: torch.Tensor) -> torch.Tensor:
    """Same contract as `rope_write_kv_ref`, one kernel launch; q/k/v may be strided views (the
    split of a fused qkv projection) as long as head_dim is contiguous."""
    n, h, d = q.shape
    r = cos.shape[-1]
    if r % 2 or r > d:
        raise ValueError(f"rotary_dim={r} (cos/sin width) is invalid for head_dim={d}: it must be even and "
                         f"at most head_dim")
    for name, t in (("q", q), ("k", k), ("v", v), ("cos", cos), ("sin", sin), ("k_cache", k_cache),
                    ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} has stride {t.stride(-1)} along head_dim; it must be 1")
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if n == 0:
        return q_out
    _rope_write_kv_kernel[(n,)](
        q, k, v, cos, sin, k_cache, v_cache, cache_rows, q_out,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cos.stride(0), sin.stride(0), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        q_out.stride(0), q_out.stride(1), h, k.shape[1],
        HALF=r // 2, BLOCK_H=triton.next_power_of_2(max(h, k.shape[1])),
        BLOCK_HALF=triton.next_power_of_2(r // 2), PASS=d - r, BLOCK_PASS=triton.next_power_of_2(max(d - r, 1)))
    return q_out
