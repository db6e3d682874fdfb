"""Micro-benchmarks of the decode-step kernels against their baselines (pytest-benchmark).

On CPU this times the torch references (and SDPA over replicated KV); on CUDA it adds the Triton
kernels and, for attention, flash-attn over replicated KV when it is installed. Shapes are
Qwen2.5-1.5B's heads and vocabulary. Run:

    pytest bench/bench_kernels.py --benchmark-json bench/results/kernels_<machine>.json
"""
import pytest
import torch
from kernel_inputs import (
    QWEN_1_5B,
    attention_inputs,
    flash_attn_replicated,
    norm_inputs,
    replicated_kv,
    rope_inputs,
    sampling_inputs,
    sdpa_replicated,
)

from budget_sampler_kernels import attention, norm, rope, sampling

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
N = [64, 256] if CUDA else [16]
PREFIX = 2048 if CUDA else 512
SUFFIX = 64 if CUDA else 32
IMPLS = ["ref", "triton"] if CUDA else ["ref"]


def timed(benchmark, fn, *args, **kwargs):
    def run():
        out = fn(*args, **kwargs)
        if CUDA:
            torch.cuda.synchronize()
        return out
    benchmark.pedantic(run, rounds=20 if CUDA else 5, warmup_rounds=2 if CUDA else 1)


@pytest.mark.parametrize("n", N)
@pytest.mark.parametrize("impl", IMPLS + ["sdpa-replicated"] + (["flash-attn-replicated"] if CUDA else []))
def test_attention(benchmark, impl, n):
    a = attention_inputs(n, PREFIX, SUFFIX, device=DEVICE, dtype=DTYPE)
    benchmark.group = f"attention n={n} prefix={PREFIX} suffix={SUFFIX}"
    if impl in IMPLS:
        timed(benchmark, getattr(attention, f"shared_prefix_attention_{impl}"), **a)
        return
    fn = sdpa_replicated if impl == "sdpa-replicated" else flash_attn_replicated()
    if fn is None:
        pytest.skip("flash-attn is not installed")
    timed(benchmark, fn, *replicated_kv(a), a["scale"])


OPS = {  # name -> (module, function name without _ref / _triton, inputs for n rows)
    "rms_norm": (norm, "rms_norm", lambda n: norm_inputs(n, QWEN_1_5B["hidden"], device=DEVICE, dtype=DTYPE)),
    "rope_write_kv": (rope, "rope_write_kv", lambda n: rope_inputs(n, device=DEVICE, dtype=DTYPE)),
    "sample top_p=0.95": (sampling, "sample",
                          lambda n: sampling_inputs(n, QWEN_1_5B["vocab"], device=DEVICE, dtype=DTYPE)),
    "sample T=1": (sampling, "sample",
                   lambda n: sampling_inputs(n, QWEN_1_5B["vocab"], device=DEVICE, dtype=DTYPE, top_p=1.0)),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", list(OPS))
def test_op(benchmark, op, impl):
    module, name, inputs = OPS[op]
    n = N[-1]
    benchmark.group = f"{op} n={n}"
    timed(benchmark, getattr(module, f"{name}_{impl}"), *inputs(n))
