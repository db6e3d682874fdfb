"""RMSNorm fused with the residual add (the decoder's pre-norm): reference and Triton kernel.

Semantics are Hugging Face Llama's: the residual stream is summed in the input dtype, normalised in
float32, cast back to the input dtype, then scaled by the weight.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._triton import tl, triton


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float,
                 residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (normed, new_residual) where new_residual = x + residual (or x)."""
    if residual is not None:
        x = x + residual
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), x


@triton.jit
def _rms_norm_kernel(X, R, W, OUT, NEW_R, stride_x, stride_r, stride_o, stride_nr, n_cols, eps,
                     HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    """One row per program: add the residual (input dtype), normalise in float32, scale."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = x + tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        tl.store(NEW_R + row * stride_nr + cols, x, mask=mask)
    h = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(h * h, axis=0) / n_cols + eps)
    # round to the input dtype before the weight, as HF does; the product of two 16-bit floats is
    # exact in float32, so this matches torch's 16-bit multiply bit for bit
    normed = (h * rstd).to(x.dtype).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(OUT + row * stride_o + cols, (w * normed).to(OUT.dtype.element_ty), mask=mask)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float,
                    residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `rms_norm_ref`, one kernel launch."""
    n_cols = x.shape[-1]
    x2 = _rows(x)
    out = torch.empty(x.shape, dtype=torch.promote_types(weight.dtype, x.dtype), device=x.device)
    out2 = out.view(-1, n_cols)
    if residual is None:
        r2, new_residual = x2, x
    else:
        r2 = _rows(residual)
        new_residual = torch.empty_like(x, memory_format=torch.contiguous_format)
    nr2 = new_residual.reshape(-1, n_cols)
    if x2.shape[0] == 0:
        return out, new_residual
    block = triton.next_power_of_2(n_cols)
    _rms_norm_kernel[(x2.shape[0],)](
        x2, r2, weight.contiguous(), out2, nr2, x2.stride(0), r2.stride(0), out2.stride(0), nr2.stride(0),
        n_cols, eps, HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=min(max(block // 256, 1), 16))
    return out, new_residual


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[rows, cols] view with unit column stride (copies only if it must)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()
