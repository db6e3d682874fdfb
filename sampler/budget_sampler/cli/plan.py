"""`budget-sampler plan`: how a model's sampling run fits a GPU, from its config.json alone."""
from __future__ import annotations

import argparse
import dataclasses
import json

from ..errors import InvalidInput
from ..memory import parse_memory
from ..models import parse_dtype, resolve_model_path
from ..plan import describe, plan

HELP = "size a run before renting GPUs: weights, KV per token, samples that fit, decode roofline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint dir, toy name or hub id (only config.json is read)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a hub model")
    p.add_argument("--gpu-memory", default="80GB", help="memory of one GPU (default: 80GB)")
    p.add_argument("--gpu-bandwidth", default="3350GB",
                   help="memory bandwidth of one GPU per second (default: 3350GB, an H100 SXM)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--prompt-tokens", type=int, default=300)
    p.add_argument("--mean-new-tokens", type=int, default=150, help="tokens a sample generates on average")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--n", type=int, default=200, help="samples per prompt (default: 200, the paper's)")
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(args: argparse.Namespace) -> int:
    for name in ("prompt_tokens", "mean_new_tokens", "max_new_tokens", "n", "max_batch_size", "tensor_parallel"):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: must be >= 1")
    if args.mean_new_tokens > args.max_new_tokens:
        raise InvalidInput(f"--mean-new-tokens={args.mean_new_tokens} is invalid: it exceeds --max-new-tokens="
                           f"{args.max_new_tokens}")
    memory, bandwidth = (parse_memory(getattr(args, name)) for name in ("gpu_memory", "gpu_bandwidth"))
    if isinstance(memory, float) or isinstance(bandwidth, float):
        raise InvalidInput("--gpu-memory and --gpu-bandwidth take sizes such as 80GB, not fractions")
    path = resolve_model_path(args.model, args.revision, files=["config.json"])
    result = plan(path, memory, parse_dtype(args.dtype), args.prompt_tokens, args.mean_new_tokens,
                  args.max_new_tokens, args.tensor_parallel, args.n, args.max_batch_size, bandwidth=bandwidth)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        print(describe(result, memory, args.n, args.max_batch_size, args.max_new_tokens))
    return 0
