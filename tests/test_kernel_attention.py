"""Shared-prefix decode attention: the Triton kernels (interpreted on CPU) against the torch reference
and against plain softmax attention over each row's concatenated [prefix; suffix] KV.

Tolerances: float32 1e-5 (only the summation order differs); float16 2e-3 absolute and relative
(the kernels round the softmax weights to float16 before the PV product, as flash attention does,
and the output is float16).
"""
import pytest
import torch

from kernels.attention import shared_prefix_attention_ref, shared_prefix_attention_triton

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3)}

CASES = [
    # rows per group, prefix length per group, kv heads, GQA ratio, head_dim, longest suffix,
    # (prefix splits, suffix splits) or None for the launcher's choice
    ([1], [1], 1, 1, 64, 0, None),
    ([3], [17], 2, 4, 64, 1, None),
    ([257], [1000], 1, 1, 64, 1, None),
    ([3, 1, 0, 5], [17, 1000, 4, 1], 1, 7, 128, 130, (3, 2)),
    ([2, 3], [1000, 17], 2, 4, 128, 130, (4, 3)),
]


def make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, dtype, seed=0):
    """Random inputs in the engine's layouts: prefixes at shuffled places in a pool with gaps,
    rows in slots that are a shuffled subset of the suffix cache, ragged suffix lengths."""
    g = torch.Generator().manual_seed(seed)
    B, H = sum(groups), hkv * ratio
    randn = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    order = torch.randperm(len(groups), generator=g).tolist()
    starts, pos = [0] * len(groups), 3
    for i in order:
        starts[i], pos = pos, pos + prefix_lens[i] + 2
    slots = B + 4
    suffix_lens = torch.randint(0, longest_suffix + 1, (B,), generator=g)
    suffix_lens[0] = longest_suffix
    return dict(
        q=randn(B, H, head_dim), prefix_k=randn(pos, hkv, head_dim), prefix_v=randn(pos, hkv, head_dim),
        row_ptr=torch.tensor([0] + groups).cumsum(0).to(torch.int32),
        prefix_start=torch.tensor(starts, dtype=torch.int32), prefix_len=torch.tensor(prefix_lens, dtype=torch.int32),
        suffix_k=randn(slots, max(longest_suffix, 1), hkv, head_dim),
        suffix_v=randn(slots, max(longest_suffix, 1), hkv, head_dim),
        slot_ids=torch.randperm(slots, generator=g)[:B].to(torch.int32), suffix_lens=suffix_lens.to(torch.int32),
        scale=head_dim ** -0.5)


def concatenated_attention(a):
    """softmax(q K^T * scale) V in float64, with K, V = [group prefix; the row's suffix]."""
    B, H, D = a["q"].shape
    ratio = H // a["prefix_k"].shape[1]
    out = torch.empty(B, H, D, dtype=torch.float64)
    for grp in range(len(a["prefix_len"])):
        start, length = int(a["prefix_start"][grp]), int(a["prefix_len"][grp])
        for b in range(int(a["row_ptr"][grp]), int(a["row_ptr"][grp + 1])):
            slot, n = int(a["slot_ids"][b]), int(a["suffix_lens"][b])
            k = torch.cat([a["prefix_k"][start:start + length], a["suffix_k"][slot, :n]]).double()
            v = torch.cat([a["prefix_v"][start:start + length], a["suffix_v"][slot, :n]]).double()
            k, v = k.repeat_interleave(ratio, dim=1), v.repeat_interleave(ratio, dim=1)  # [L, H, D]
            p = torch.softmax(torch.einsum("hd,lhd->hl", a["q"][b].double(), k) * a["scale"], dim=-1)
            out[b] = torch.einsum("hl,lhd->hd", p, v)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, splits", CASES)
def test_matches_reference_and_plain_attention(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix,
                                               splits, dtype):
    a = make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, dtype)
    ps, ss = splits or (None, None)
    out = shared_prefix_attention_triton(**a, prefix_splits=ps, suffix_splits=ss)
    assert out.dtype == dtype and out.shape == a["q"].shape
    torch.testing.assert_close(out, shared_prefix_attention_ref(**a), **TOL[dtype])
    torch.testing.assert_close(out.double(), concatenated_attention(a), **TOL[dtype])


def test_splits_do_not_change_the_result():
    """Splitting the prefix and the suffix into parts is exact up to float32 rounding."""
    a = make_inputs([2, 1], [300, 70], 1, 2, 32, 100, torch.float32, seed=1)
    whole = shared_prefix_attention_triton(**a, prefix_splits=1, suffix_splits=1)
    for ps, ss in [(2, 1), (1, 4), (16, 16)]:
        torch.testing.assert_close(shared_prefix_attention_triton(**a, prefix_splits=ps, suffix_splits=ss),
                                   whole, atol=1e-6, rtol=1e-6)
