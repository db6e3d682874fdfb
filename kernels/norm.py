"""RMSNorm fused with the residual add (the decoder's pre-norm): reference and Triton kernel.

Semantics are Hugging Face Llama's: the residual stream is summed in the input dtype, normalised in
float32, cast back to the input dtype, then scaled by the weight.
"""
from __future__ import annotations

from typing import Optional

import torch


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float,
                 residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (normed, new_residual) where new_residual = x + residual (or x)."""
    if residual is not None:
        x = x + residual
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype), x
