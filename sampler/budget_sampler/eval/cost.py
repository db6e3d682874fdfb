"""Memory-aware cost of a sample on a named GPU (Kinetics, Sadhukhan et al. 2025, arXiv 2506.05333):

    eFLOPs = FLOPs + I x bytes moved,  I = peak FLOP/s / memory bandwidth (the GPU's FLOPs per byte),

so a byte costs what the GPU could have computed in the time it takes to move it. At many-sample
decode the weights are read once per step for the whole batch and every sample's KV once per token:
FLOPs alone flatter small models, whose steps are memory-bound.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InvalidInput
from ..plan import decode_step_bytes
from ..profiling import peak_flops

# name -> (the device name profiling.peak_flops reads the dense peak from, memory bandwidth in bytes/s,
# from NVIDIA's datasheets)
GPUS = {"h100-sxm": ("NVIDIA H100 80GB HBM3", 3.35e12), "h100-pcie": ("NVIDIA H100 PCIe", 2.0e12),
        "h100-nvl": ("NVIDIA H100 NVL", 3.9e12), "h200": ("NVIDIA H200", 4.8e12),
        "a100": ("NVIDIA A100-SXM4-80GB", 2.039e12)}
DEFAULT_GPU = "h100-sxm"


def config_from_dict(config: dict):
    """The transformers config that model.json keeps as a dict (the report reads no model files)."""
    from transformers import AutoConfig
    return AutoConfig.for_model(**config)


def check_gpu(gpu: str) -> None:
    if gpu not in GPUS:
        raise InvalidInput(f"--gpu {gpu!r} is invalid: choose one of {', '.join(GPUS)}")


def intensity(gpu: str, dtype: torch.dtype) -> float:
    """I: the GPU's dense peak FLOP/s for dtype over its memory bandwidth."""
    check_gpu(gpu)
    device_name, bandwidth = GPUS[gpu]
    return peak_flops(device_name, dtype) / bandwidth


def mean_sample_bytes(hf_config, dtype: torch.dtype, batch: int, prompts: float,
                      samples: Sequence[tuple[int, int]]) -> float:
    """Bytes a sample's decode moves, averaged over `samples` (prompt tokens, new tokens): a sample of m
    new tokens takes its 1/batch share of m steps, a step of `batch` samples of `prompts` prompts (each
    prompt's KV read once) moving plan.decode_step_bytes at its suffix s = 1..m. Those bytes are affine in
    the prompt tokens and the suffix, so the sum over all samples' steps is one call at the token-weighted
    means: sum_r m_r x bytes(P_r, (m_r + 1) / 2) = M x bytes(sum_r m_r P_r / M, sum_r m_r (m_r + 1) / 2 / M),
    M = sum_r m_r. Prefill moves the weights once per prompt: compute-bound, left out."""
    tokens = sum(m for _, m in samples)
    if not tokens:
        return 0.0
    prompt = sum(m * p for p, m in samples) / tokens
    suffix = sum(m * (m + 1) / 2 for _, m in samples) / tokens
    return tokens * decode_step_bytes(hf_config, dtype, batch, prompts * prompt, suffix) / batch / len(samples)
