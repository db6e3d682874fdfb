"""RMSNorm (+ residual add) Triton kernel, interpreted on CPU, against the torch reference.

Tolerances: float32 1e-5 relative (summation order of the mean square); float16 one unit in the
last place (the normalised value is rounded to float16 before the weight, as in Hugging Face).
The new residual is a plain add in the input dtype, so it must match exactly.
"""
import pytest
import torch

from budget_sampler_kernels.norm import rms_norm_ref, rms_norm_triton

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=1e-3, rtol=1e-3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(1, 64), (3, 100), (257, 1536), (2, 3, 96)])
@pytest.mark.parametrize("with_residual", [False, True], ids=["no-residual", "residual"])
def test_matches_reference(shape, dtype, with_residual):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(*shape, generator=g) * 3).to(dtype)
    residual = torch.randn(*shape, generator=g).to(dtype) if with_residual else None
    weight = (torch.rand(shape[-1], generator=g) + 0.5).to(dtype)
    out, new_residual = rms_norm_triton(x, weight, 1e-6, residual)
    want, want_residual = rms_norm_ref(x, weight, 1e-6, residual)
    assert out.dtype == want.dtype and out.shape == want.shape
    torch.testing.assert_close(out, want, **TOL[dtype])
    assert torch.equal(new_residual, want_residual)
    if residual is None:
        assert new_residual is x


def test_float32_weight_promotes_like_torch():
    x = torch.randn(5, 48).to(torch.float16)
    weight = torch.rand(48) + 0.5
    out, _ = rms_norm_triton(x, weight, 1e-5)
    want, _ = rms_norm_ref(x, weight, 1e-5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_strided_rows():
    """A column slice (row stride != width) is normalised without the caller copying it."""
    base = torch.randn(6, 160)
    x, residual = base[:, :128], base[:, 16:144]
    weight = torch.rand(128) + 0.5
    out, new_residual = rms_norm_triton(x, weight, 1e-6, residual)
    want, want_residual = rms_norm_ref(x, weight, 1e-6, residual)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(new_residual, want_residual)
