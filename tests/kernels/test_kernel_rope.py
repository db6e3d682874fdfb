"""Rotary embedding + KV-cache write Triton kernel, interpreted on CPU, against the torch reference.

q, k and v are strided views of one fused qkv projection, as the model passes them; the cache rows
are scattered and every other cache row must stay untouched. Tolerances: float32 1e-6; float16
one unit in the last place (the reference rounds each product to float16, the kernel only the sum).
V is copied, so it must match exactly. Partial rotary (Phi-3: the first rotary_dim dims of a head
rotate, the rest pass through) is checked the same way.
"""
import pytest
import torch

from budget_sampler_kernels.rope import rope_write_kv_ref, rope_write_kv_triton

TOL = {torch.float32: dict(atol=1e-6, rtol=1e-6), torch.float16: dict(atol=2e-3, rtol=1e-3)}


def rope_tables(positions, head_dim, theta=10000.0):
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("n, heads, kv_heads, head_dim, rotary_dim", [
    (1, 4, 4, 16, 16), (3, 8, 2, 64, 64), (257, 7, 1, 128, 128), (5, 4, 2, 64, 32), (3, 6, 3, 96, 24)])
def test_matches_reference(n, heads, kv_heads, head_dim, rotary_dim, dtype):
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(n, (heads + 2 * kv_heads) * head_dim, generator=g).to(dtype)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k, v = q.view(n, heads, head_dim), k.view(n, kv_heads, head_dim), v.view(n, kv_heads, head_dim)
    cos, sin = rope_tables(torch.randint(0, 4096, (n,), generator=g), rotary_dim)
    rows = torch.randperm(n + 9, generator=g)[:n]
    k_cache = torch.randn(n + 9, kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(n + 9, kv_heads, head_dim, generator=g).to(dtype)
    k_want, v_want = k_cache.clone(), v_cache.clone()

    q_rot = rope_write_kv_triton(q, k, v, cos, sin, k_cache, v_cache, rows)
    q_want = rope_write_kv_ref(q, k, v, cos, sin, k_want, v_want, rows)
    assert q_rot.dtype == dtype and q_rot.shape == q.shape
    torch.testing.assert_close(q_rot, q_want, **TOL[dtype])
    torch.testing.assert_close(k_cache, k_want, **TOL[dtype])
    assert torch.equal(v_cache, v_want)
    untouched = torch.ones(n + 9, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(k_cache[untouched], k_want[untouched])
    if rotary_dim < head_dim:  # the dims past the rotary ones pass through unchanged
        assert torch.equal(q_rot[..., rotary_dim:], q[..., rotary_dim:])
        assert torch.equal(k_cache[rows][..., rotary_dim:], k[..., rotary_dim:])
