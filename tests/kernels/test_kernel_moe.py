"""Fused MoE Triton kernels, interpreted on CPU, against the torch reference run in float64.

Tolerances (outputs of order 1): float32 1e-5 absolute and relative (float32 accumulation, the
reference's float64); float16 3e-3 and bfloat16 2e-2 absolute and relative (both paths round the
SiLU x up activation and the output to the input dtype: one half-precision rounding each, 2^-11 and
2^-8 relative, of terms that partly cancel). The interpreter's tl.dot returns garbage for bfloat16
operands (triton 3.9; numpy has no bfloat16), so the kernels run fp32 and fp16 here and bf16 on a
GPU (bench/gpu_check.py); the CPU path (the reference) is checked in all three.
"""
import pytest
import torch

import budget_sampler_kernels as kernels
from budget_sampler_kernels.moe import moe_align, moe_experts_ref, moe_experts_triton

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=3e-3, rtol=3e-3),
       torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def make(tokens, experts, top_k, hidden=40, inter=24, dtype=torch.float32, skew=False, seed=0):
    """Random layer inputs; hidden and intermediate sizes off the tile sizes (masks). skew: every
    token picks among the first top_k + 1 experts only, so one expert gets many blocks and most none."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=g)
    gate_up = torch.randn(experts, 2 * inter, hidden, generator=g) / hidden ** 0.5
    down = torch.randn(experts, hidden, inter, generator=g) / inter ** 0.5
    pool = top_k + 1 if skew else experts
    ids = torch.rand(tokens, pool, generator=g).argsort(dim=1)[:, :top_k]
    weights = torch.rand(tokens, top_k, generator=g)
    weights = weights / weights.sum(1, keepdim=True)
    return x.to(dtype), gate_up.to(dtype), down.to(dtype), weights, ids


CASES = [  # tokens, experts, top_k, skew
    (1, 8, 2, False), (3, 8, 1, False), (3, 128, 8, False), (257, 8, 2, False), (257, 128, 8, False),
    (40, 8, 2, True),
]


@pytest.mark.parametrize("tokens,experts,top_k,skew", CASES, ids=[f"m{m}-e{e}-k{k}{'-skew' * s}"
                                                                   for m, e, k, s in CASES])
def test_matches_float64_reference(tokens, experts, top_k, skew):
    x, gate_up, down, weights, ids = make(tokens, experts, top_k, skew=skew, seed=tokens + experts)
    want = moe_experts_ref(x.double(), gate_up.double(), down.double(), weights.double(), ids)
    got = moe_experts_triton(x, gate_up, down, weights, ids)
    assert got.dtype == x.dtype and got.shape == x.shape
    torch.testing.assert_close(got.double(), want, **TOL[torch.float32])
    torch.testing.assert_close(moe_experts_ref(x, gate_up, down, weights, ids).double(), want, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("tokens,experts,top_k", [(3, 128, 8), (33, 8, 2)])
def test_half_precision(tokens, experts, top_k, dtype):
    x, gate_up, down, weights, ids = make(tokens, experts, top_k, hidden=64, inter=32, dtype=dtype, seed=tokens)
    want = moe_experts_ref(x.double(), gate_up.double(), down.double(), weights.double(), ids)
    torch.testing.assert_close(moe_experts_ref(x, gate_up, down, weights, ids).double(), want, **TOL[dtype])
    if dtype == torch.float16:
        got = moe_experts_triton(x, gate_up, down, weights, ids)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **TOL[dtype])


def test_align_sorts_pairs_by_expert_in_padded_blocks():
    ids = torch.tensor([[3, 0], [3, 5], [0, 3]])
    pairs, block_expert = moe_align(ids, num_experts=8, block_m=4)
    # runs: expert 0 (pairs 1, 4), expert 3 (pairs 0, 2, 5), expert 5 (pair 3), each padded to 4 with 6
    assert pairs.tolist()[:12] == [1, 4, 6, 6, 0, 2, 5, 6, 3, 6, 6, 6]
    assert pairs.shape[0] == 6 + 6 * 3  # M*k + min(E, M*k) * (block_m - 1), a multiple of block_m
    assert block_expert.tolist() == [0, 3, 5] + [8] * 3 and set(pairs.tolist()[12:]) == {6}


def test_no_tokens_and_cpu_dispatch():
    x, gate_up, down, weights, ids = make(0, 8, 2)
    assert moe_experts_triton(x, gate_up, down, weights, ids).shape == (0, 40)
    assert moe_experts_ref(x, gate_up, down, weights, ids).shape == (0, 40)
    x, gate_up, down, weights, ids = make(5, 8, 2)
    assert torch.equal(kernels.moe_experts(x, gate_up, down, weights, ids),
                       moe_experts_ref(x, gate_up, down, weights, ids))
