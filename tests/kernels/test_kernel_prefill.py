"""Prefill attention (one prompt, causal, over its paged K/V): the reference against causal softmax
attention over the prompt's contiguous K/V in float64 (1e-10: the same math), and the SDPA op
against the reference in float32 (1e-5: summation order only), with and without a sliding window
and soft-capping (the soft-capped path in chunks of query rows)."""
import pytest
import torch

import budget_sampler_kernels.prefill as prefill_module
from budget_sampler_kernels.prefill import prefill_attention, prefill_attention_ref

NUM_BLOCKS = 24


def paged(k, v, block_size, g):
    """k, v [Hkv, L, D] written into the same shuffled blocks of two random pools; (caches, table)."""
    hkv, length, d = k.shape
    blocks = (torch.randperm(NUM_BLOCKS - 1, generator=g)[:-(-length // block_size)] + 1).tolist()
    caches = []
    for t in (k, v):
        cache = torch.randn(hkv, NUM_BLOCKS, block_size, d, generator=g, dtype=t.dtype)
        for i, b in enumerate(blocks):
            chunk = t[:, i * block_size:(i + 1) * block_size]
            cache[:, b, :chunk.shape[1]] = chunk
        caches.append(cache)
    return caches, torch.tensor([blocks + [0, 0]], dtype=torch.int32)  # padded past the end with block 0


@pytest.mark.parametrize("window, softcap", [(None, None), (5, None), (None, 1.5), (16, 2.0), (100, None)],
                         ids=["causal", "window", "softcap", "window-softcap", "window-longer-than-prompt"])
@pytest.mark.parametrize("length,heads,hkv,d,block_size", [(1, 4, 4, 16, 16), (17, 8, 2, 32, 16),
                                                           (64, 6, 1, 64, 16), (45, 4, 2, 16, 7)])
def test_prefill_matches_causal_attention(length, heads, hkv, d, block_size, window, softcap, monkeypatch):
    monkeypatch.setattr(prefill_module, "SOFTCAP_CHUNK", 7)  # several chunks, the last one short
    g = torch.Generator().manual_seed(length * 31 + heads)
    q = torch.randn(length, heads, d, generator=g, dtype=torch.float64) * 3  # scores a cap of 1.5-2 bends
    k, v = (torch.randn(hkv, length, d, generator=g, dtype=torch.float64) for _ in range(2))
    (k_cache, v_cache), table = paged(k, v, block_size, g)
    scale = d ** -0.5
    kk, vv = (t.repeat_interleave(heads // hkv, dim=0) for t in (k, v))  # [H, L, D]
    s = torch.einsum("lhd,htd->hlt", q, kk) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    visible = torch.ones(length, length, dtype=torch.bool).tril()
    if window is not None:
        visible &= ~torch.ones(length, length, dtype=torch.bool).tril(-window)  # key t > query i - window
    want = torch.einsum("hlt,htd->lhd", torch.softmax(s.masked_fill(~visible, float("-inf")), -1), vv)
    torch.testing.assert_close(prefill_attention_ref(q, k_cache, v_cache, table, scale, softcap, window), want,
                               atol=1e-10, rtol=1e-10)
    q, k_cache, v_cache = q.float(), k_cache.float(), v_cache.float()
    torch.testing.assert_close(prefill_attention(q, k_cache, v_cache, table, scale, softcap, window),
                               prefill_attention_ref(q, k_cache, v_cache, table, scale, softcap, window),
                               atol=1e-5, rtol=1e-5)
