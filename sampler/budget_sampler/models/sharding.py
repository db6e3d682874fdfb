"""Megatron-style sharding of the decoder over tensor-parallel ranks (gpt-fast's tp.py, nano-vllm's
column- and row-parallel linears), applied while the streamed loader reads each tensor.

Column-parallel (q/k/v, gate/up; StarCoder2's up; Phi-3's fused qkv_proj and gate_up_proj part by
part, so a rank holds its heads of q, of k and of v): each rank holds a contiguous 1/N of the output
rows, that is whole heads and 1/N of the intermediate size, so its model is the same decoder with
num_heads / N, num_kv_heads / N and intermediate_size / N, and its KV pool holds only its heads.
Row-parallel (o_proj, down_proj): each rank holds the matching 1/N of the input columns and the
partial outputs are summed by an all-reduce; the bias lives on rank 0 only (zeros elsewhere), so the
sum adds it once. Everything else (embeddings, norms, the LM head) is replicated. The embeddings and
the LM head then cost 2 x vocab x hidden on every rank instead of 1/N of it (1 GB per rank for
CodeLlama-70B in bf16, 4 GB for Llama 3 70B's 128k vocabulary, next to 140 GB / N of layers); in
exchange every rank has the full logits, so sampling needs no gather and runs unchanged.

Mixture of experts (vLLM's tensor-parallel experts): each rank holds every expert's 1/N slice of the
intermediate size, gate/up column-parallel and down row-parallel as in a dense MLP, and the router
replicated, so each rank routes identically; the block's partial output is summed after down.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import InvalidInput
from .llama import MoE

COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
FUSED = ("qkv_proj", "gate_up_proj")  # shipped fused (Phi-3): column-parallel part by part
ROW_PARALLEL = ("o_proj", "down_proj")


def check_divisible(cfg, world_size: int) -> None:
    """Heads, KV heads and the intermediate size must split evenly over the ranks."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise InvalidInput(f"tensor_parallel={world_size!r} is invalid: must be an integer >= 1")
    sizes = {"num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
             "intermediate_size": cfg.intermediate_size}
    if cfg.num_experts:
        sizes["moe_intermediate_size"] = cfg.moe_intermediate_size
    for name, value in sizes.items():
        if value % world_size:
            raise InvalidInput(f"tensor_parallel={world_size} does not divide the model's {name} ({value}); "
                               "it must divide " + ", ".join(f"{n} ({v})" for n, v in sizes.items()))


@dataclass(frozen=True)
class Shard:
    """This process's rank among `world_size` tensor-parallel ranks (rank 0 of 1: the whole model)."""
    rank: int = 0
    world_size: int = 1

    def config(self, cfg):
        """The model config of this rank's part: its heads, KV heads and intermediate slice."""
        check_divisible(cfg, self.world_size)
        n = self.world_size
        if n > 1 and cfg.qk_norm == "proj":
            raise InvalidInput(f"tensor_parallel={n} is not supported for model_type {cfg.model_type!r}: its q/k "
                               "norm spans every head of the projection; use tensor_parallel=1")
        return replace(cfg, num_heads=cfg.num_heads // n, num_kv_heads=cfg.num_kv_heads // n,
                       intermediate_size=cfg.intermediate_size // n,
                       moe_intermediate_size=cfg.moe_intermediate_size // n)

    def read(self, f, key: str, name: str, parts: Optional[list[int]] = None) -> torch.Tensor:
        """This rank's part of checkpoint tensor `key` (named `name` in Hugging Face terms,
        e.g. layers.0.self_attn.q_proj.weight or layers.0.mlp.experts.3.down_proj.weight) from an open
        safetensors file, reading only that part. `parts`: for a FUSED matrix, this rank's rows of
        each part (q, k, v or gate, up)."""
        *_, proj, kind = name.split(".")
        if self.world_size == 1 or proj not in COLUMN_PARALLEL + ROW_PARALLEL + FUSED:
            return f.get_tensor(key)
        if proj in ROW_PARALLEL and kind == "bias":
            bias = f.get_tensor(key)
            return bias if self.rank == 0 else torch.zeros_like(bias)
        part = f.get_slice(key)
        if proj in FUSED and parts:  # part i holds rows start_i ... of the full matrix: this rank's share of each
            starts = [self.world_size * sum(parts[:i]) for i in range(len(parts))]
            return torch.cat([part[s + self.rank * p:s + (self.rank + 1) * p] for s, p in zip(starts, parts)])
        dim = 0 if proj in COLUMN_PARALLEL else 1
        size = part.get_shape()[dim] // self.world_size
        cut = slice(self.rank * size, (self.rank + 1) * size)
        return part[cut] if dim == 0 else part[:, cut]


def all_reduce_row_parallel(model, group=None) -> None:
    """Sum each row-parallel projection's partial output, and each block of experts', over the ranks,
    in place (as gpt-fast does, with a forward hook; it runs inside the captured decode step too)."""
    def hook(module, inputs, output):
        dist.all_reduce(output, group=group)

    for name, module in model.named_modules():
        if name.rpartition(".")[2] in ROW_PARALLEL or isinstance(module, MoE):
            module.register_forward_hook(hook)
