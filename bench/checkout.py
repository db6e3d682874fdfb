"""Where a checkout's import packages live, for the benches that run another checkout beside this one.

Since issue 32 the packages are `sampler/budget_sampler` and `kernels/budget_sampler_kernels`; a checkout from
before it has `sampler` and `kernels` at its root. The A/B benches compare across that change, so each side is
run with its own paths and its own package name.
"""
from __future__ import annotations

from pathlib import Path


def renamed(root: Path) -> bool:
    return (Path(root) / "sampler" / "budget_sampler").is_dir()


def import_paths(root: Path) -> list[str]:
    """The sys.path entries that make `root`'s packages importable (and shadow no one else's)."""
    root = Path(root)
    return [str(root / "sampler"), str(root / "kernels")] if renamed(root) else [str(root)]


def package(root: Path) -> str:
    """`root`'s import name for the sampler package."""
    return "budget_sampler" if renamed(root) else "sampler"


def kernels_dir(root: Path) -> Path:
    root = Path(root)
    return root / "kernels" / "budget_sampler_kernels" if renamed(root) else root / "kernels"
