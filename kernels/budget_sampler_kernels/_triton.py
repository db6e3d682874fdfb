"""`triton` and `triton.language` when installed; otherwise a stand-in that lets the op modules
define their kernels (so the torch references beside them still import) and refuses to launch them.
Also the device facts the launchers size their grids by."""
from __future__ import annotations

import functools

import torch


class _MissingTriton:
    @staticmethod
    def jit(fn):
        return fn

    def __getattr__(self, name):
        raise ImportError("the Triton kernels need the `triton` package: pip install 'budget-sampler[triton]'")


try:
    import triton
    import triton.language as tl
except ImportError:
    triton, tl = _MissingTriton(), None


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the interpreter runs programs in turn)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


__all__ = ["triton", "tl", "sm_count"]
