"""Memory-aware cost of a sample on a named GPU (Kinetics, Sadhukhan et al. 2025, arXiv 2506.05333):

    eFLOPs = FLOPs + I x bytes moved,  I = peak FLOP/s / memory bandwidth (the GPU's FLOPs per byte),

so a byte costs what the GPU could have computed in the time it takes to move it. At many-sample
decode the weights are read once per step for the whole batch and every sample's KV once per token:
FLOPs alone flatter small models, whose steps are memory-bound.
"""
from __future__ import annotations

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


def sample_bytes(hf_config, dtype: torch.dtype, batch: int, prompts: float, prompt_tokens: float,
                 new_tokens: int) -> float:
    """Bytes a sample's decode moves: its 1/batch share of each of its new_tokens steps, a step of
    `batch` samples of `prompts` prompts moving plan.decode_step_bytes (each prompt's KV read once).
    Those bytes grow linearly with the suffix, so the steps' sum is new_tokens x the bytes at the
    mean suffix (new_tokens + 1) / 2. Prefill moves the weights once per prompt: compute-bound, left out."""
    step = decode_step_bytes(hf_config, dtype, batch, prompts * prompt_tokens, (new_tokens + 1) / 2)
    return new_tokens * step / batch
