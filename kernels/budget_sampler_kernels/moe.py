"""Routed experts of a mixture-of-experts layer: torch reference and fused Triton kernels.

Given each token's top-k experts (ids [M, k]) and routing weights ([M, k]), the layer is
    y[m] = sum_j w[m, j] * down_e(silu(gate_e x[m]) * up_e x[m]),  e = ids[m, j],
with every expert's gate and up stacked as gate_up [E, 2I, H] (gate rows, then up rows) and its down
as down [E, H, I] (Hugging Face transformers 5's fused expert layout).

The Triton path follows vLLM's fused_moe (model_executor/layers/fused_moe/, its moe_align_block_size
and fused_moe_kernel) in design, written anew:
- align: the M*k (token, expert) pairs are sorted by expert and each expert's run is padded to a
  multiple of BLOCK_M, so every M-block of the sorted list belongs to one expert; padding holds the
  sentinel M*k. The sorted list is sized by a bound from shapes alone, M*k + min(E, M*k) * (BLOCK_M - 1),
  and blocks past the padded total carry expert id E and exit at once: no host sync, so the decode
  step can be captured in a CUDA graph.
- grouped GEMM, one launch per matrix: a program takes one M-block (one expert) and one N-tile,
  gathers its rows of the activations by pair index (no permuted copy of x), reads that expert's
  weight tile, accumulates in float32 and scatters rows to their pairs: gate/up -> [M*k, 2I];
- SiLU x up beside it (activation.py's kernel), rounded to the input dtype like Hugging Face's;
- down, the same kernel, multiplying each row by its routing weight in float32 and storing float32;
- the sum over k in float32, rounded once to the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._triton import tl, triton
from .activation import silu_and_mul_ref, silu_and_mul_triton


def moe_experts_ref(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, topk_weights: torch.Tensor,
                    topk_ids: torch.Tensor) -> torch.Tensor:
    """x [M, H]; gate_up [E, 2I, H]; down [E, H, I]; topk_weights [M, k] (float32); topk_ids [M, k].
    Returns [M, H] in x's dtype. Groups the pairs by expert and runs one matmul per expert that got
    a token (the CPU path: a host sync per layer is free there); computes in x's dtype, weights and
    sums in float32 or wider."""
    m, k = topk_ids.shape
    flat = topk_ids.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=gate_up.shape[0]).tolist()
    groups = x[order // k].split(counts)  # each expert's tokens, in the order of the sorted pairs
    out = torch.cat([F.linear(silu_and_mul_ref(F.linear(rows, gate_up[e])), down[e])
                     for e, rows in enumerate(groups) if len(rows)] or [x[:0]])
    weight = topk_weights.reshape(-1)[order, None].to(torch.promote_types(x.dtype, torch.float32))
    pairs = torch.empty(m * k, x.shape[1], dtype=weight.dtype, device=x.device).index_copy_(0, order, out * weight)
    return pairs.view(m, k, x.shape[1]).sum(1).to(x.dtype)


def moe_align(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (token, expert) pairs (pair p = token * k + j) sorted by expert, each expert's run padded to
    a multiple of block_m with the sentinel M*k; and the expert of each block_m-block (num_experts past
    the end). Shapes depend only on M, k, E and block_m; no value is read on the host."""
    pairs = topk_ids.numel()
    flat = topk_ids.reshape(-1).long()
    counts = torch.zeros(num_experts, dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = padded.cumsum(0)
    order = flat.argsort(stable=True)
    expert = flat[order]
    rank = torch.arange(pairs, device=flat.device) - (counts.cumsum(0) - counts)[expert]  # place in its run
    size = triton.cdiv(pairs + min(num_experts, pairs) * (block_m - 1), block_m) * block_m
    sorted_pairs = torch.full((size,), pairs, dtype=torch.int32, device=flat.device)
    sorted_pairs[(padded_end - padded)[expert] + rank] = order.to(torch.int32)
    block_starts = torch.arange(0, size, block_m, device=flat.device)
    block_expert = torch.searchsorted(padded_end, block_starts, right=True).to(torch.int32)
    return sorted_pairs, block_expert


@triton.jit
def _moe_gemm_kernel(A, B, C, PAIRS, BLOCK_EXPERT, WEIGHTS, N, K, num_pairs, num_experts,
                     stride_am, stride_be, stride_bn, stride_bk, stride_cm,
                     TOP_K: tl.constexpr, A_PER_PAIR: tl.constexpr, MUL_WEIGHTS: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """C[pair, n] = (w[pair]) * sum_k A[row(pair), k] * B[expert, n, k] for one M-block (one expert) and
    one N-tile; row(pair) = pair (A holds a row per pair) or pair // TOP_K (A holds a row per token)."""
    pid_m = tl.program_id(0)
    expert = tl.load(BLOCK_EXPERT + pid_m).to(tl.int64)
    if expert >= num_experts:  # a block past the padded total
        return
    pair = tl.load(PAIRS + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = pair < num_pairs
    row = pair if A_PER_PAIR else pair // TOP_K
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = A + row.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = B + expert * stride_be + offs_n[None, :].to(tl.int64) * stride_bn + offs_k[:, None] * stride_bk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    if MUL_WEIGHTS:
        acc = acc * tl.load(WEIGHTS + pair, mask=valid, other=0.0)[:, None]
    c_ptrs = C + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


def block_m_for(tokens: int) -> int:
    """Rows per expert tile: 16 for decode batches (a few pairs per expert), 64 for prompts. The cut is a
    multiple of 16, so padding a batch to a captured graph's size (1, 2, 4, 8, then steps of 16) never
    crosses it and a row's rounding does not depend on the padding."""
    return 16 if tokens <= 512 else 64


def _gemm(a, w, out, sorted_pairs, block_expert, weights, top_k: int, a_per_pair: bool, block_m: int) -> None:
    num_experts, n, k = w.shape
    block_n = min(64, max(16, triton.next_power_of_2(n)))
    block_k = min(128, max(16, triton.next_power_of_2(k)))
    grid = (block_expert.shape[0], triton.cdiv(n, block_n))
    _moe_gemm_kernel[grid](
        a, w, out, sorted_pairs, block_expert, weights, n, k, out.shape[0], num_experts,
        a.stride(0), w.stride(0), w.stride(1), w.stride(2), out.stride(0),
        TOP_K=top_k, A_PER_PAIR=a_per_pair, MUL_WEIGHTS=weights is not None, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, PRECISION="ieee" if a.dtype == torch.float32 else "tf32", num_warps=4, num_stages=3)


def moe_experts_triton(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor, topk_weights: torch.Tensor,
                       topk_ids: torch.Tensor) -> torch.Tensor:
    """Same contract as `moe_experts_ref`: align, gate/up grouped GEMM, SiLU x up, down grouped GEMM with
    the routing weights, sum over k. Weights' last dims must be contiguous."""
    m, k = topk_ids.shape
    if m == 0:
        return torch.zeros_like(x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    block_m = block_m_for(m)
    sorted_pairs, block_expert = moe_align(topk_ids, gate_up.shape[0], block_m)
    hidden = torch.empty(m * k, gate_up.shape[1], dtype=x.dtype, device=x.device)
    _gemm(x, gate_up, hidden, sorted_pairs, block_expert, None, k, False, block_m)
    act = silu_and_mul_triton(hidden)
    out = torch.empty(m * k, down.shape[1], dtype=torch.float32, device=x.device)
    weights = topk_weights.reshape(-1).to(torch.float32)
    _gemm(act, down, out, sorted_pairs, block_expert, weights, 1, True, block_m)
    return out.view(m, k, -1).sum(1).to(x.dtype)
