"""Shared-prefix decode attention: the Triton kernels (interpreted on CPU) against the torch reference
and against plain softmax attention over each row's concatenated [prefix; suffix] KV.

Every case runs both paths of the launcher: one launch that writes the output (splits=1) and the
keys split across programs with partial results merged by a second launch (the interpreter has one
"SM", so the launcher's own choice is the single launch unless a test lends it a GPU's SM count).

Tolerances: float32 1e-5 (only the summation order differs); float16 2e-3 absolute and relative
(the kernels round the softmax weights to float16 before the PV product, as flash attention does,
and the output is float16). The same tolerances hold with soft-capping and a sliding window (the
kernel's tanh is exp2-based, within 1e-7 relative of torch's in float32).
"""
import pytest
import torch

import budget_sampler_kernels.attention as attention_module
from budget_sampler_kernels.attention import launch_plan, shared_prefix_attention_ref, shared_prefix_attention_triton

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3)}

CASES = [
    # rows per group, prefix length per group, kv heads, GQA ratio, head_dim, longest suffix,
    # block size, splits of the split path
    ([1], [1], 1, 1, 64, 0, 16, 2),
    ([3], [17], 2, 4, 64, 1, 16, 3),
    ([257], [1000], 1, 1, 64, 1, 32, 4),
    ([3, 1, 0, 5], [17, 1000, 4, 1], 1, 7, 128, 130, 16, 3),
    ([2, 3], [1000, 17], 2, 4, 128, 130, 7, 4),
    ([4, 2], [16, 33], 2, 1, 64, 32, 16, 2),  # prefix and suffix ending exactly on block ends
    # Qwen2.5-1.5B's GQA ratio: tiles of 64 stacked rows start mid-row (64 % 6 != 0)
    ([1, 3, 2], [1000, 1, 17], 2, 6, 128, 40, 16, 5),
    ([257], [17], 1, 6, 64, 9, 16, 3),
    ([5, 1, 7], [0, 300, 1], 1, 6, 128, 70, 8, 16),  # an empty prefix (a CUDA graph's padding group)
    ([2, 0, 3, 1], [40, 9, 1000, 3], 2, 1, 128, 20, 16, 7),
]


def make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, dtype, seed=0):
    """Random inputs in the engine's layouts: one paged pool holds every prefix and suffix in
    shuffled blocks (a few left unused), ragged suffix lengths (0 and 1 included), tables padded
    with block 0 past each sequence's end. A row whose group has no prefix gets a suffix token
    at least (in the engine every row attends to the token it just wrote)."""
    g = torch.Generator().manual_seed(seed)
    B, H = sum(groups), hkv * ratio
    randn = lambda *shape: torch.randn(*shape, generator=g).to(dtype)  # noqa: E731
    suffix_lens = torch.randint(0, longest_suffix + 1, (B,), generator=g)
    suffix_lens[0] = longest_suffix
    if B > 2:
        suffix_lens[1:3] = torch.tensor([0, 1])
    group_of_row = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(groups))
    suffix_lens = torch.where(torch.tensor(prefix_lens)[group_of_row] == 0, suffix_lens.clamp_min(1), suffix_lens)
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


def concatenated_attention(a, softcap=None, window=None):
    """softmax(q K^T * scale) V in float64, with K, V = [group prefix; the row's suffix]; with softcap
    the scores are softcap * tanh(s / softcap), with a window the row sees its last `window` keys."""
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
            s = torch.einsum("hd,lhd->hl", a["q"][b].double(), k) * a["scale"]
            if softcap is not None:
                s = torch.tanh(s / softcap) * softcap
            if window is not None:
                s[:, :max(0, length + n - window)] = float("-inf")
            out[b] = torch.einsum("hl,lhd->hd", torch.softmax(s, dim=-1), v)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, splits", CASES)
def test_matches_reference_and_plain_attention(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix,
                                               block_size, splits, dtype):
    a = make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, dtype)
    want, plain = shared_prefix_attention_ref(**a), concatenated_attention(a)
    for n in (1, splits):  # the single launch, then the split path
        out = shared_prefix_attention_triton(**a, splits=n)
        assert out.dtype == dtype and out.shape == a["q"].shape
        torch.testing.assert_close(out, want, **TOL[dtype])
        torch.testing.assert_close(out.double(), plain, **TOL[dtype])


FP32, FP16 = torch.float32, torch.float16
WINDOW_CASES = [
    # a case like CASES', a window, a soft-cap, a dtype: windows that cut into the prefix for some
    # rows and not others (one shorter than a block, one longer than every sequence), an empty
    # prefix, rows without a suffix; soft-capping alone and with a window
    pytest.param(([3, 1, 0, 5], [17, 150, 4, 1], 1, 7, 128, 40, 16, 3), 90, None, FP32, id="window-fp32"),
    pytest.param(([2, 3], [60, 17], 2, 4, 128, 30, 7, 4), 7, 1.5, FP32, id="short-window-softcap-fp32"),
    pytest.param(([5, 1, 7], [0, 100, 1], 1, 6, 128, 30, 8, 5), 33, 2.0, FP16, id="window-softcap-fp16"),
    pytest.param(([1, 3, 2], [100, 1, 17], 2, 6, 64, 40, 16, 5), 50, None, FP16, id="window-fp16"),
    pytest.param(([2, 0, 3, 1], [40, 9, 200, 3], 2, 1, 128, 20, 16, 7), 5000, 1.5, FP16,
                 id="window-longer-than-all-softcap-fp16"),
    pytest.param(CASES[1], None, 0.5, FP32, id="softcap-fp32"),
]


@pytest.mark.parametrize("case, window, softcap, dtype", WINDOW_CASES)
def test_window_and_softcap_match_reference_and_plain_attention(case, window, softcap, dtype):
    groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, splits = case
    a = make_inputs(groups, prefix_lens, hkv, ratio, head_dim, longest_suffix, block_size, dtype,
                    seed=(window or 0) + 7)
    a["q"] = a["q"] * 3  # scores of a few units: a cap of 0.5-2 bends them
    want = shared_prefix_attention_ref(**a, softcap=softcap, window=window)
    torch.testing.assert_close(want.double(), concatenated_attention(a, softcap, window), **TOL[dtype])
    if window is not None and window < max(prefix_lens) + longest_suffix:  # the window masks something
        assert not torch.allclose(want, shared_prefix_attention_ref(**a, softcap=softcap), **TOL[dtype])
    for n in (1, splits):
        out = shared_prefix_attention_triton(**a, softcap=softcap, window=window, splits=n)
        torch.testing.assert_close(out, want, **TOL[dtype])


def test_splits_do_not_change_the_result():
    """Splitting the keys into parts is exact up to float32 rounding (a split holds at least 256
    prefix keys and 4 steps of a suffix, so these lengths fill 3 prefix splits and up to 16 suffix
    splits, some of them sharing a program)."""
    a = make_inputs([2, 1], [700, 70], 1, 2, 32, 600, 16, torch.float32, seed=1)
    whole = shared_prefix_attention_triton(**a, splits=1)
    for n in (2, 4, 16):
        torch.testing.assert_close(shared_prefix_attention_triton(**a, splits=n), whole, atol=1e-6, rtol=1e-6)


def test_launch_plan_on_a_gpu(monkeypatch):
    """With an H200's 132 SMs: one launch where the tiles fill the GPU, splits where they do not
    (no more than the block tables can fill), and the launcher's own split path matches the
    reference."""
    monkeypatch.setattr(attention_module, "sm_count", lambda device: 132)

    def plan(n, prefix, ratio=6, hkv=2, head_dim=128):
        a = make_inputs([n], [prefix], hkv, ratio, head_dim, 5, 16, torch.float32)
        return a, launch_plan(a["q"], a["prefix_k"], a["prefix_tables"], a["suffix_k"], a["suffix_tables"])

    assert plan(1024, 17)[1].splits == 1  # 96 tiles of 64 stacked rows per KV head
    assert plan(64, 17)[1].splits > 1
    assert plan(16, 1000)[1].splits > plan(16, 17)[1].splits  # longer tables fill more splits
    a, p = plan(5, 600, ratio=4, hkv=1, head_dim=64)
    assert p.splits > 1
    torch.testing.assert_close(shared_prefix_attention_triton(**a), shared_prefix_attention_ref(**a),
                               **TOL[torch.float32])


def test_gather_blocks_view_and_copy_agree():
    """A sequence in consecutive blocks is read as a view of the cache; scattered ones are copied."""
    from budget_sampler_kernels.attention import gather_blocks
    cache = torch.randn(2, 12, 4, 8)
    for table in ([3, 4, 5, 0], [5, 3, 4, 0]):
        t = torch.tensor([table], dtype=torch.int32)
        want = torch.stack([cache[:, int(t[0, i // 4]), i % 4] for i in range(10)], dim=1)  # [Hkv, 10, D]
        got = gather_blocks(cache, t, 10)
        assert got.shape == (2, 1, 12, 8)
        torch.testing.assert_close(got[:, 0, :10], want, atol=0, rtol=0)
