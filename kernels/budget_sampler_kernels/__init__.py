"""Decode-step kernels with one entry point per op.

Dispatch: CUDA tensors run the Triton kernels; CPU tensors run the torch references. The backend
can be forced with `set_backend("torch" | "triton" | "auto")` or the environment variable
BUDGET_SAMPLER_KERNELS; with TRITON_INTERPRET=1 set before triton is imported, "triton" runs the
kernels on CPU tensors (that is how the tests check them without a GPU).
"""
from __future__ import annotations

import os

from .activation import silu_and_mul_ref
from .attention import shared_prefix_attention_ref
from .moe import moe_experts_ref
from .norm import rms_norm_ref
from .rope import rope_write_kv_ref
from .sampling import sample_ref

_BACKENDS = ("auto", "torch", "triton")
_backend = os.environ.get("BUDGET_SAMPLER_KERNELS", "auto")


def set_backend(name: str) -> None:
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"kernel backend {name!r} is unknown; choose one of {', '.join(_BACKENDS)}")
    _backend = name


def get_backend() -> str:
    return _backend


def _use_triton(t) -> bool:
    if _backend == "torch":
        return False
    if _backend == "triton":
        return True
    return t.is_cuda and _triton_available()


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def rms_norm(x, weight, eps, residual=None):
    if _use_triton(x):
        from .norm import rms_norm_triton
        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_ref(x, weight, eps, residual)


def silu_and_mul(x):
    if _use_triton(x):
        from .activation import silu_and_mul_triton
        return silu_and_mul_triton(x)
    return silu_and_mul_ref(x)


def moe_experts(x, gate_up, down, topk_weights, topk_ids):
    """Routed experts' weighted sum (see moe.py): grouped GEMMs on CUDA, one matmul per active expert on CPU."""
    if _use_triton(x):
        from .moe import moe_experts_triton
        return moe_experts_triton(x, gate_up, down, topk_weights, topk_ids)
    return moe_experts_ref(x, gate_up, down, topk_weights, topk_ids)


def rope_write_kv(q, k, v, cos, sin, k_cache, v_cache, cache_rows):
    if _use_triton(q):
        from .rope import rope_write_kv_triton
        return rope_write_kv_triton(q, k, v, cos, sin, k_cache, v_cache, cache_rows)
    return rope_write_kv_ref(q, k, v, cos, sin, k_cache, v_cache, cache_rows)


def prefill_attention(q, k_cache, v_cache, table, scale, softcap=None, window=None):
    """Causal attention of one prompt over its paged K/V (SDPA on every device; see prefill.py)."""
    from .prefill import prefill_attention as attend
    return attend(q, k_cache, v_cache, table, scale, softcap, window)


def shared_prefix_attention(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                            suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap=None, window=None):
    if _use_triton(q):
        from .attention import shared_prefix_attention_triton
        return shared_prefix_attention_triton(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                              suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap, window)
    return shared_prefix_attention_ref(q, prefix_k, prefix_v, row_ptr, prefix_tables, prefix_lens,
                                       suffix_k, suffix_v, suffix_tables, suffix_lens, scale, softcap, window)


def sample(logits, temperature, top_k, top_p, min_p, seeds, sample_idx, steps):
    if _use_triton(logits):
        from .sampling import sample_triton
        return sample_triton(logits, temperature, top_k, top_p, min_p, seeds, sample_idx, steps)
    return sample_ref(logits, temperature, top_k, top_p, min_p, seeds, sample_idx, steps)
