"""`triton` and `triton.language` when installed; otherwise a stand-in that lets the op modules
define their kernels (so the torch references beside them still import) and refuses to launch them."""
from __future__ import annotations


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

__all__ = ["triton", "tl"]
