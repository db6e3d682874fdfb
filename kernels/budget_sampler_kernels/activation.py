"""SiLU-and-multiply, the gated MLP's activation (down(silu(gate) * up)): reference and Triton
kernel. One kernel instead of torch's two (silu, then multiply) on the gate/up halves of one matrix
product; two separate elementwise passes over n x 8960 took 15 us per layer at n=256 on an H200.

Semantics are Hugging Face's in 16-bit floats: silu(gate) is rounded to the input dtype before the
multiply, which is itself rounded once (a product of two 16-bit floats is exact in float32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._triton import tl, triton


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    """x = [..., 2 * I] holding gate then up; returns silu(gate) * up, [..., I]."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


@triton.jit
def _silu_and_mul_kernel(X, OUT, stride_x, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(X + row * stride_x + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(OUT.dtype.element_ty).to(tl.float32)
    tl.store(OUT + row * stride_o + cols, (act * up).to(OUT.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    """Same contract as `silu_and_mul_ref`, one kernel launch."""
    n_cols = x.shape[-1] // 2
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape[0], n_cols, dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        block = min(1024, triton.next_power_of_2(n_cols))
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(n_cols, block))](
            rows, out, rows.stride(0), out.stride(0), n_cols, BLOCK=block, num_warps=4)
    return out.reshape(*x.shape[:-1], n_cols)
