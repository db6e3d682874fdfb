"""The model options every subcommand that loads a model shares, and the one place that loads it."""
from __future__ import annotations

import argparse
from typing import Optional

from ..api import Sampler


def add_model_arguments(p: argparse.ArgumentParser, model: bool = True) -> None:
    """`model=False` for subcommands that name their models otherwise (eval's --models)."""
    if model:
        p.add_argument("--model", required=True,
                       help="checkpoint dir, toy name (toy-xs…) or cached hub id")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--max-batch-size", type=int, default=256, help="sample slots decoded together")


def load_sampler(args: argparse.Namespace, model: Optional[str] = None):
    """`model` (default: --model) loaded with the shared options."""
    return Sampler.from_pretrained(model or args.model, device=args.device, dtype=args.dtype,
                                   max_batch_size=args.max_batch_size)
