"""The KV cache's memory budget: bytes, a size such as "40GB", or a fraction of the memory left
after the weights, turned into a number of KV blocks.

Defaults: on CUDA, 0.9 of the GPU memory free once the weights are loaded (vLLM's
gpu_memory_utilization, applied to what is left); on CPU, 2 GiB, which fits a 24 GiB machine with
room for the model and the evaluator. Either way the pool is never larger than max_batch_size
samples of a full context can use.
"""
from __future__ import annotations

import re

import torch

from .errors import InvalidInput

CPU_DEFAULT_BYTES = 2 << 30
CUDA_DEFAULT_FRACTION = 0.9
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_memory(text: str) -> int | float:
    """"0.9" -> 0.9 (a fraction); "40GB" -> 40 * 10**9, "512MiB" -> 512 * 2**20, "1000000" -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and m.group(2).lower()
    if not m or unit not in _UNITS:
        raise InvalidInput(f"memory size {text!r} is invalid: give a fraction in (0, 1] such as 0.9, "
                           f"or a size such as 40GB, 512MB, 2GiB")
    number = float(m.group(1))
    if not unit and "." in m.group(1):
        return number
    return int(number * _UNITS[unit])


def kv_cache_bytes(kv_cache_memory, device: torch.device) -> int:
    """The budget in bytes; a fraction applies to the memory free now (call after loading weights)."""
    if kv_cache_memory is None:
        kv_cache_memory = CUDA_DEFAULT_FRACTION if device.type == "cuda" else CPU_DEFAULT_BYTES
    if isinstance(kv_cache_memory, str):
        kv_cache_memory = parse_memory(kv_cache_memory)
    if isinstance(kv_cache_memory, bool) or not isinstance(kv_cache_memory, (int, float)):
        raise InvalidInput(f"kv_cache_memory={kv_cache_memory!r} is invalid: bytes (int), a fraction in (0, 1] "
                           f"or a size string such as '40GB'")
    if isinstance(kv_cache_memory, float):
        if not 0 < kv_cache_memory <= 1:
            raise InvalidInput(f"kv_cache_memory={kv_cache_memory!r} is invalid: a fraction must be in (0, 1]")
        return int(kv_cache_memory * free_memory(device))
    if kv_cache_memory <= 0:
        raise InvalidInput(f"kv_cache_memory={kv_cache_memory!r} is invalid: bytes must be > 0")
    return kv_cache_memory


def free_memory(device: torch.device) -> int:
    """Bytes a new allocation can still have: on CUDA the driver's free memory plus what torch's
    caching allocator holds unused (a previous model's freed KV pool stays reserved there, so the
    driver alone would leave the next model of a ladder a tenth of the GPU)."""
    if device.type == "cuda":
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + unused
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def release_cached(device: torch.device) -> None:
    """Hand what torch's caching allocator holds unused back to the device (after an out-of-memory
    error: the retry may need it in one piece)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def kv_bytes_per_token(cfg, dtype: torch.dtype) -> int:
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype.itemsize


def num_kv_blocks(cfg, dtype: torch.dtype, device: torch.device, kv_cache_memory, block_size: int,
                  max_batch_size: int) -> int:
    """Blocks in the pool, the scratch block included."""
    per_block = kv_bytes_per_token(cfg, dtype) * block_size
    budget = kv_cache_bytes(kv_cache_memory, device)
    usable = budget // per_block - 1
    if usable < 1:
        raise InvalidInput(f"kv_cache_memory of {budget:,} bytes holds no KV block: one block of {block_size} "
                           f"tokens takes {per_block:,} bytes (plus one scratch block)")
    most = max_batch_size * (-(-cfg.max_context // block_size) + 1)  # every slot with its own full context
    return min(usable, most) + 1
