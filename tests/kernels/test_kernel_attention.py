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
    # block size, (prefix splits, suffix splits) or None for the launcher's choice
    ([1], [1], 1, 1, 64, 0, 16, None),
    ([3], [17], 2, 4, 64, 1, 16, None),
    ([257], [1000], 1, 1, 64, 1, 32, None),
    ([3, 1, 0, 5], [17, 1000, 4, 1], 1, 7, 128, 130, 16, (3, 2)),
    ([2, 3], [1000, 17], 2, 4, 128, 130, 7, (4, 3)),
    ([4, 2], [16, 33], 2, 1, 64, 32, 16, None),  # prefix and suffix ending exactly on block ends
]


def make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, dtype, seed=0):
    """Random inputs in the engine's layouts: one paged pool holds every prefix and suffix in
    shuffled blocks (a few left unused), ragged suffix lengths (0 and 1 included), tables padded
    with block 0 past each sequence's end."""
    g = torch.Generator().manual_seed(seed)
    B, H = sum(groups), hkv * ratio
    randn = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    suffix_lens = torch.randint(0, longest_suffix + 1, (B,), generator=g)
    suffix_lens[0] = longest_suffix
    if B > 2:
        suffix_lens[1:3] = torch.tensor([0, 1])
    cdiv = lambda n: -(-n // block_size)  # noqa: E731
    lengths = list(prefix_lens) + suffix_lens.tolist()
    max_blocks = max(cdiv(n) for n in lengths) + 1
    num_blocks = sum(cdiv(n) for n in lengths) + 5
    free = (torch.randperm(num_blocks - 1, generator=g) + 1).tolist()
    tables = torch.zeros(len(lengths), max_blocks, dtype=torch.int32)
    for i, n in enumerate(lengths):
        tables[i, :cdiv(n)] = torch.tensor([free.pop() for _ in range(cdiv(n))], dtype=torch.int32)
    shape = (hkv, num_blocks, block_size, head_dim)
    return dict(
        q=randn(B, H, head_dim), prefix_k=(k := randn(*shape)), prefix_v=(v := randn(*shape)),
        row_ptr=torch.tensor([0] + groups).cumsum(0).to(torch.int32),
        prefix_tables=tables[:len(groups)], prefix_lens=torch.tensor(prefix_lens, dtype=torch.int32),
        suffix_k=k, suffix_v=v, suffix_tables=tables[len(groups):], suffix_lens=suffix_lens.to(torch.int32),
        scale=head_dim ** -0.5)


def sequence(cache, table, n):
    """Tokens 0..n-1 of a paged sequence, [n, Hkv, D], read one token at a time."""
    bs = cache.shape[2]
    if not n:
        return cache[:, 0, :0].transpose(0, 1)
    return torch.stack([cache[:, int(table[t // bs]), t % bs] for t in range(n)])


def concatenated_attention(a):
    """softmax(q K^T * scale) V in float64, with K, V = [group prefix; the row's suffix]."""
    B, H, D = a["q"].shape
    ratio = H // a["prefix_k"].shape[0]
    out = torch.empty(B, H, D, dtype=torch.float64)
    for grp in range(len(a["prefix_lens"])):
        length, ptable = int(a["prefix_lens"][grp]), a["prefix_tables"][grp]
        for b in range(int(a["row_ptr"][grp]), int(a["row_ptr"][grp + 1])):
            n, stable = int(a["suffix_lens"][b]), a["suffix_tables"][b]
            k = torch.cat([sequence(a["prefix_k"], ptable, length), sequence(a["suffix_k"], stable, n)]).double()
            v = torch.cat([sequence(a["prefix_v"], ptable, length), sequence(a["suffix_v"], stable, n)]).double()
            k, v = k.repeat_interleave(ratio, dim=1), v.repeat_interleave(ratio, dim=1)  # [L, H, D]
            p = torch.softmax(torch.einsum("hd,lhd->hl", a["q"][b].double(), k) * a["scale"], dim=-1)
            out[b] = torch.einsum("hl,lhd->hd", p, v)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, splits", CASES)
def test_matches_reference_and_plain_attention(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix,
                                               block_size, splits, dtype):
    a = make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, dtype)
    ps, ss = splits or (None, None)
    out = shared_prefix_attention_triton(**a, prefix_splits=ps, suffix_splits=ss)
    assert out.dtype == dtype and out.shape == a["q"].shape
    torch.testing.assert_close(out, shared_prefix_attention_ref(**a), **TOL[dtype])
    torch.testing.assert_close(out.double(), concatenated_attention(a), **TOL[dtype])


def test_splits_do_not_change_the_result():
    """Splitting the prefix and the suffix into parts is exact up to float32 rounding (a split
    holds at least 256 keys, so these lengths fill up to 3 splits)."""
    a = make_inputs([2, 1], [700, 70], 1, 2, 32, 600, 16, torch.float32, seed=1)
    whole = shared_prefix_attention_triton(**a, prefix_splits=1, suffix_splits=1)
    for ps, ss in [(2, 1), (1, 4), (16, 16)]:
        torch.testing.assert_close(shared_prefix_attention_triton(**a, prefix_splits=ps, suffix_splits=ss),
                                   whole, atol=1e-6, rtol=1e-6)


def test_gather_blocks_view_and_copy_agree():
    """A sequence in consecutive blocks is read as a view of the cache; scattered ones are copied."""
    from kernels.attention import gather_blocks
    cache = torch.randn(2, 12, 4, 8)
    for table in ([3, 4, 5, 0], [5, 3, 4, 0]):
        t = torch.tensor([table], dtype=torch.int32)
        want = torch.stack([cache[:, int(t[0, i // 4]), i % 4] for i in range(10)], dim=1)  # [Hkv, 10, D]
        got = gather_blocks(cache, t, 10)
        assert got.shape == (2, 1, 12, 8)
        torch.testing.assert_close(got[:, 0, :10], want, atol=0, rtol=0)
