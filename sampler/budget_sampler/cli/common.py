"""The model options every subcommand that loads a model shares, and the one place that loads it."""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

from ..api import LoadOptions, Sampler
from ..eval.execute import SANDBOXES, TIMEOUT


def add_model_arguments(p: argparse.ArgumentParser, model: bool = True) -> None:
    """`model=False` for subcommands that name their models otherwise (eval's --models)."""
    if model:
        p.add_argument("--model", required=True,
                       help="checkpoint dir, toy name (toy-xs…) or hub id (downloaded)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a hub model (default: main)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--max-batch-size", type=int, default=256, help="most samples decoded together (default: 256)")
    p.add_argument("--kv-cache-memory", default=None, metavar="SIZE",
                   help="KV cache budget: a fraction of the memory left after the weights (0.9) or a size "
                        "(40GB, 512MB, 2GiB); default: 0.9 on CUDA, 2GiB on CPU")
    p.add_argument("--tensor-parallel", type=int, default=1, metavar="N",
                   help="split the model over N processes (on CUDA: GPUs cuda:0..N-1) on this node, "
                        "or over torchrun's N processes (default: 1)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false", default=None,
                   help="run the decode step eagerly on CUDA instead of replaying CUDA graphs")


def add_sandbox_arguments(p: argparse.ArgumentParser) -> None:
    """How eval and evaluate run each sample's tests."""
    p.add_argument("--timeout", type=float, default=TIMEOUT,
                   help=f"wall-clock seconds per test run, for APPS per test case (default: {TIMEOUT:g})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="test runs in parallel (default: CPU count)")
    p.add_argument("--sandbox", choices=SANDBOXES, default="auto",
                   help="isolation of each test run: Linux namespaces, or the process guard alone "
                        "(default: auto, namespaces where they work)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The options add_model_arguments added."""
    return LoadOptions(**{f.name: getattr(args, f.name) for f in fields(LoadOptions)})


def load_sampler(args: argparse.Namespace) -> Sampler:
    """--model loaded with the shared options."""
    return load_options(args).load(args.model)
