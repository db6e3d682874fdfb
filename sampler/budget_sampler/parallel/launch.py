"""Start the tensor-parallel ranks and stop them: spawn N - 1 worker processes on this node (or join
the ones torchrun started), give every rank its part of the model and an Engine, and hand rank 0's
ReplicatedEngine and a shutdown to the caller (which builds the Sampler).
"""
from __future__ import annotations

import os
import socket
import time
import weakref
from datetime import timedelta
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..engine import Engine, default_block_size
from ..errors import InvalidInput
from ..memory import kv_bytes_per_token, num_kv_blocks
from ..models import load_hf_config, load_model
from ..models.llama import ModelConfig
from ..models.sharding import Shard, check_divisible
from .replica import ReplicatedEngine, follow, send
from .watchdog import Watchdog, beat

# ranks >= 1 wait for rank 0's next call on the control group as long as the Sampler is open
IDLE_TIMEOUT = timedelta(days=365)
JOIN_SECONDS = 60


def start(path, device: str, dtype: torch.dtype, world_size: int, max_batch_size: int, kv_cache_memory,
          cuda_graphs: Optional[bool]) -> tuple[ReplicatedEngine, Callable[[], None]]:
    """Rank 0's engine over `world_size` ranks, and what stops the others (also run when the engine
    is collected, or at exit). Under torchrun (RANK / WORLD_SIZE set) every process calls this;
    ranks >= 1 serve rank 0 here and exit the process when it closes."""
    check_divisible(ModelConfig.from_hf(load_hf_config(path)), world_size)
    if device not in ("cpu", "cuda"):
        raise InvalidInput(f"device {device!r} with tensor_parallel={world_size}: give 'cpu' or 'cuda' "
                           f"(rank r runs on cuda:r)")
    if device == "cuda" and torch.cuda.device_count() < world_size:
        raise InvalidInput(f"tensor_parallel={world_size} needs {world_size} GPUs; "
                           f"{torch.cuda.device_count()} visible")
    if dist.is_initialized():
        raise InvalidInput("a tensor-parallel Sampler is already open in this process: close() it first")
    options = (path, device, dtype, world_size, max_batch_size, kv_cache_memory, cuda_graphs)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        if int(os.environ["WORLD_SIZE"]) != world_size:
            raise InvalidInput(f"tensor_parallel={world_size} but torchrun started "
                               f"{os.environ['WORLD_SIZE']} processes: they must be equal")
        rank = int(os.environ["RANK"])
        engine = run_rank(rank, int(os.environ.get("LOCAL_RANK", rank)), "env://", options)
        if rank:
            raise SystemExit(0)
        return engine, _owning(engine, [])
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    context = mp.get_context("spawn")
    beats = context.Array("d", [time.monotonic()] * world_size, lock=False)  # the spawned ranks' signs of life
    workers = [context.Process(target=run_rank, args=(rank, rank, init_method, options, beats), daemon=True,
                               name=f"tensor-parallel-rank-{rank}") for rank in range(1, world_size)]
    for w in workers:
        w.start()
    watchdog = Watchdog(beats, workers)
    try:
        engine = run_rank(0, 0, init_method, options, watchdog=watchdog)
    except BaseException:
        watchdog.close()
        _stop(workers)
        raise
    return engine, _owning(engine, workers)


def run_rank(rank: int, local_rank: int, init_method: str, options, beats=None,
             watchdog: Optional[Watchdog] = None) -> Optional[ReplicatedEngine]:
    """Join the group and load this rank's Engine: rank 0 returns its ReplicatedEngine (watched by
    `watchdog`), the others follow rank 0's calls until it closes (beating into `beats` where rank 0
    spawned them). A rank that fails to load makes every rank raise its error (rank 0 to the caller)
    instead of waiting on it."""
    if beats is not None:
        beat(beats, rank)
    path, device, dtype, world_size, max_batch_size, kv_cache_memory, cuda_graphs = options
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    else:  # the ranks share this node's cores
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method=init_method,
                            rank=rank, world_size=world_size)
    control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)  # engine calls, load status
    block_size = default_block_size(torch.device(device))
    try:
        hf_config = load_hf_config(path)
        model = load_model(path, hf_config, device, dtype, Shard(rank, world_size))
        # every rank must have the same pool (free GPU memory may differ): take the smallest
        status = num_kv_blocks(model.cfg, dtype, torch.device(device), kv_cache_memory, block_size, max_batch_size)
    except Exception as e:
        status = e
    statuses = [None] * world_size
    dist.all_gather_object(statuses, status, group=control)
    failed = [s for s in statuses if isinstance(s, BaseException)]
    if failed:
        dist.destroy_process_group()
        if rank == 0:
            raise failed[0]
        return None
    kv_bytes = min(statuses) * kv_bytes_per_token(model.cfg, dtype) * block_size
    engine = Engine.from_checkpoint(path, hf_config, model, max_batch_size, kv_bytes, cuda_graphs)
    if rank == 0:
        return ReplicatedEngine(engine, control, watchdog)
    follow(engine, control)
    dist.destroy_process_group()
    return None


def _owning(engine: ReplicatedEngine, workers: list) -> Callable[[], None]:
    """Stop the other ranks on close(), when the engine is collected, or at exit (whichever first);
    the finalizer must not hold the engine, only its group and watchdog."""
    return weakref.finalize(engine, _shutdown, engine.group, workers, engine.watchdog)


def _shutdown(group, workers: list, watchdog: Optional[Watchdog]) -> None:
    try:
        if watchdog is None or watchdog.failure is None:  # after a failure the ranks are gone
            send(None, group)  # the other ranks leave `follow`
    finally:
        if watchdog is not None:
            watchdog.close()
        _stop(workers)
        dist.destroy_process_group()


def _stop(workers: list) -> None:
    """Wait for the workers to exit (they do once rank 0 closes, or fails to load); kill stragglers."""
    for w in workers:
        w.join(JOIN_SECONDS)
        if w.is_alive():
            w.kill()
            w.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
