"""SiLU-and-multiply Triton kernel, interpreted on CPU, against the torch reference.

Tolerances: float32 2e-6 relative (the kernel's exp against torch's); float16 one unit in the last
place (silu is rounded to float16 before the multiply in both, so only an exp ulp can move it).
"""
import pytest
import torch

import budget_sampler_kernels as kernels
from budget_sampler_kernels.activation import silu_and_mul_ref, silu_and_mul_triton

TOL = {torch.float32: dict(atol=1e-6, rtol=2e-6), torch.float16: dict(atol=1e-3, rtol=1e-3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(1, 2), (3, 200), (17, 2 * 1100), (2, 3, 96)])
def test_matches_reference(shape, dtype):
    g = torch.Generator().manual_seed(shape[-1])
    x = (torch.randn(*shape, generator=g) * 4).to(dtype)
    out = silu_and_mul_triton(x)
    want = silu_and_mul_ref(x)
    assert out.dtype == want.dtype and out.shape == want.shape == (*shape[:-1], shape[-1] // 2)
    torch.testing.assert_close(out, want, **TOL[dtype])


def test_strided_rows_and_empty_batch():
    x = torch.randn(6, 40)[::2]  # rows 80 elements apart
    torch.testing.assert_close(silu_and_mul_triton(x), silu_and_mul_ref(x), atol=1e-6, rtol=2e-6)
    assert silu_and_mul_triton(torch.randn(0, 8)).shape == (0, 4)


def test_cpu_tensors_dispatch_to_the_reference():
    x = torch.randn(3, 16)
    assert torch.equal(kernels.silu_and_mul(x), silu_and_mul_ref(x))
