"""The decode step measured as eval runs it (the engine's own step: replayed from CUDA graphs on CUDA):
its time, its matmul floor (the step's linear layers alone at the same batch, on the model's weights),
its bytes and FLOPs (sampler.plan's formulas) against the measured copy bandwidth and the device's
peak, and where an eager step goes by op group. `budget-sampler profile` and bench/profile_step.py
print these; eval records an engine session's floor and limits in engine.jsonl (`session_limits`).
"""
from __future__ import annotations

import re
import statistics
import time
from contextlib import contextmanager
from typing import Optional

import torch

import budget_sampler_kernels as kernels

from .cache import cdiv
from .engine import Engine
from .errors import InvalidInput
from .memory import kv_bytes_per_token
from .models.llama import MoE
from .params import SamplingParams
from .plan import decode_step_bytes, decode_step_flops, samples_that_fit

# Dense peak TFLOPS (16-bit tensor cores, FP32 without TF32: torch's default for float32 matmuls) from
# NVIDIA's H100, H200 and A100 datasheets, the 16-bit figures being half of those "with sparsity". The
# first pattern that matches torch.cuda.get_device_name() wins.
PEAK_TFLOPS = ((r"H100.*PCIe", 756.0, 51.0), (r"H[12]00.*NVL", 835.0, 60.0), (r"H100|H200", 989.0, 67.0),
               (r"A100", 312.0, 19.5))

# Op groups of a step. A CPU op counts in the group of its innermost labelled call (the kernels' entry
# points, wrapped in profiler ranges named after them while profiling), a CUDA kernel in the group its
# own name matches; what matches none is "other".
GROUPS = {"attention": r"(prefix|suffix)_attention|_attention_kernel",  # one kernel on CUDA: prefix and suffix
          "attention merge": r"merge", "sampling": r"sample|_(stats|search|mass|pick|check|draw|finish)_kernel",
          "norms": r"rms_norm", "RoPE + KV write": r"rope", "SiLU x up": r"silu",
          "routed experts": r"moe",  # before matmuls: the experts' grouped GEMM is named _moe_gemm_kernel
          "matmuls": r"gemm|gemv|nvjet|cutlass|xmma|splitK|^aten::(linear|matmul|mm|addmm|bmm)$"}
ENTRY_POINTS = ((kernels.attention, "prefix_attention_ref"), (kernels.attention, "suffix_attention_ref"),
                (kernels.attention, "merge_attention_ref"), (kernels, "sample"), (kernels, "rms_norm"),
                (kernels, "rope_write_kv"), (kernels, "silu_and_mul"), (kernels, "moe_experts"))
LABELS = {name.removesuffix("_ref") for _, name in ENTRY_POINTS}
PROFILED_STEPS = 3


def timed_ms(fn, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` calls after one warm-up, synchronised on CUDA."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def matmul_floor_ms(model, n: int, repeats: int = 20) -> float:
    """Median time of one decode step's linear layers alone at batch n, on our model's weights (a
    mixture of experts' layer: its router and expert GEMMs, routing random inputs); on CUDA replayed
    from one graph, so no launch gaps count."""
    import torch.nn.functional as F
    weights, experts = [], []
    for block in model.layers:
        weights += [block.self_attn.qkv_proj.weight, block.self_attn.o_proj.weight]
        if isinstance(block.mlp, MoE):
            experts.append(block.mlp)
        else:  # gated or not
            weights += [m.weight for m in block.mlp.modules() if isinstance(m, torch.nn.Linear)]
    weights.append(model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight)
    inputs = {w.shape[1]: torch.randn(n, w.shape[1], device=w.device, dtype=w.dtype) for w in weights}

    def step():
        for w in weights:
            F.linear(inputs[w.shape[1]], w)
        for moe in experts:
            moe(inputs[model.cfg.hidden_size])

    with torch.inference_mode():
        if weights[0].is_cuda:
            step()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            return timed_ms(graph.replay, repeats)
        return timed_ms(step, repeats)


def copy_bandwidth(device, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second (read + write) of copying nbytes on the device, four copies a timing so that the
    syncs around it hardly count: the bandwidth a step's bytes are held against."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def copies():
        for _ in range(4):
            dst.copy_(src)

    return 2 * 4 * nbytes / (timed_ms(copies, repeats) / 1e3)


def peak_flops(device_name: str, dtype: torch.dtype) -> Optional[float]:
    """The GPU's dense peak FLOP/s for dtype from PEAK_TFLOPS; None for a device not in it."""
    for pattern, half, single in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return 1e12 * (single if dtype == torch.float32 else half)
    return None


def group(name: str) -> str:
    return next((g for g, pattern in GROUPS.items() if re.search(pattern, name)), "other")


def _cpu_group(event) -> str:
    """The group of the innermost labelled call around a CPU op, else of the op's own name."""
    e = event
    while e is not None and e.name not in LABELS:
        e = e.cpu_parent
    return group((e or event).name)


@contextmanager
def _labelled():
    """The kernels' entry points wrapped in profiler ranges named after them, restored after."""
    from torch.profiler import record_function

    def ranged(label, fn):
        def call(*args, **kwargs):
            with record_function(label):
                return fn(*args, **kwargs)
        return call

    saved = [(module, name, getattr(module, name)) for module, name in ENTRY_POINTS]
    try:
        for module, name, fn in saved:
            setattr(module, name, ranged(name.removesuffix("_ref"), fn))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def step_parts(runner, steps: int = PROFILED_STEPS) -> tuple[dict[str, float], list[dict]]:
    """Eager decode steps of the runner's batch under the torch profiler: milliseconds per step by op
    group (device time on CUDA, CPU self time on CPU), and per op (kernel on CUDA) by name."""
    from torch.profiler import ProfilerActivity, profile
    cuda = runner.token.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    size, num_groups = runner.padded_size, runner.num_groups
    with _labelled(), torch.inference_mode():
        runner._decode_step(size, num_groups)  # warm
        sync()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            for _ in range(steps):
                runner._decode_step(size, num_groups)
            sync()
    ops = []
    for e in prof.key_averages():
        us = (e.self_device_time_total if cuda else e.self_cpu_time_total) / steps
        if us > 0 and (not cuda or e.device_type.name == "CUDA"):
            ops.append(dict(name=e.key[:90], us_per_step=us, calls_per_step=e.count / steps))
    ops.sort(key=lambda r: -r["us_per_step"])
    parts = dict.fromkeys([*GROUPS, "other"], 0.0)
    if cuda:
        for op in ops:
            parts[group(op["name"])] += op["us_per_step"] / 1e3
    else:
        for e in prof.events():
            parts[_cpu_group(e)] += e.self_cpu_time_total / steps / 1e3
    return parts, ops


def _steps_before(new_tokens: int, repeats: int) -> int:
    """Engine steps before the timed ones, so that these are centred on the new_tokens / 2-th token."""
    return max(1, new_tokens // 2 - repeats // 2 - 1)


def tokens_per_sample(new_tokens: int, repeats: int) -> int:
    """The tokens a measured sample is allowed (measure): new_tokens, or more where the timed and the
    profiled steps run past them."""
    return max(new_tokens, _steps_before(new_tokens, repeats) + repeats + PROFILED_STEPS + 3)


def measure(sampler, prompt_ids: list[int], n: int, top_p: float, new_tokens: int, repeats: int = 10) -> dict:
    """n samples of one prompt mid-generation (the timed steps centred on each sample's new_tokens / 2-th
    token): the prefill per prompt token, the median of `repeats` engine steps (host work, the step's
    replay or eager run, the sync for the sampled tokens), the matmul floor at batch n and an eager
    step's parts (step_parts). `batch` is what ran at once: below n where the slots or KV fall short."""
    engine = sampler.engine
    warm = SamplingParams(n=1, temperature=0.0, max_new_tokens=2)  # compiles the prefill for this length
    engine.add_request(prompt_ids, warm)
    while engine.has_unfinished():
        engine.step()
    first = _steps_before(new_tokens, repeats)
    params = SamplingParams(n=n, temperature=1.0, top_p=top_p, ignore_eos=True, seed=0,
                            max_new_tokens=tokens_per_sample(new_tokens, repeats))
    engine.stats.reset()
    rid = engine.add_request(prompt_ids, params)
    for _ in range(first):
        engine.step()  # the first prefills, fans out and decodes once: step k leaves k tokens of suffix KV
    batch = engine.runner.batch_size
    prefill_ms_per_token = 1e3 * engine.stats.prefill_seconds / engine.stats.prefill_tokens
    step_ms = timed_ms(engine.step, repeats)
    parts, ops = step_parts(engine.runner)
    engine.abort_request(rid)
    while engine.has_unfinished():
        engine.step()
    return dict(n=n, batch=batch, suffix_tokens=first + 1 + (repeats + 1) // 2,
                prefill_ms_per_token=prefill_ms_per_token, step_ms=step_ms,
                floor_ms=matmul_floor_ms(sampler.model, n), parts_ms=parts, ops=ops[:25])


def session_limits(sampler, prompt_tokens: float, samples_per_prompt: float, suffix_tokens: float) \
        -> Optional[dict]:
    """An eval session's decode step at its mean batch (tokens per decode step): the matmul floor, the
    bytes (with the batch's prompts, about batch / samples_per_prompt of them) and FLOPs of plan's
    formulas, and on CUDA the copy bandwidth and the GPU's peak; for engine.jsonl. None without decode
    steps or for an engine not in this process (tensor parallel's stand-in)."""
    engine, stats = sampler.engine, sampler.stats
    if not isinstance(engine, Engine) or not stats.decode_steps:
        return None
    batch = max(1, round(stats.generated_tokens / stats.decode_steps))
    dtype, device, cuda = engine.pool.k.dtype, engine.device, engine.device.type == "cuda"
    prompts = max(1.0, batch / samples_per_prompt)
    suffix = max(1, round(suffix_tokens))
    limits = {"batch": batch, "matmul_floor_seconds": matmul_floor_ms(sampler.model, batch) / 1e3,
              "step_bytes": decode_step_bytes(sampler.config, dtype, batch, round(prompts * prompt_tokens), suffix),
              "step_flops": decode_step_flops(sampler.config, batch, round(prompt_tokens), suffix),
              "bandwidth": None, "peak_flops": None}
    if cuda:
        try:
            limits["bandwidth"] = copy_bandwidth(device, 1 << 28)
        except torch.cuda.OutOfMemoryError:  # the KV pool took the memory: MBU goes unreported
            pass
        limits["peak_flops"] = peak_flops(torch.cuda.get_device_name(device), dtype)
    return limits


def kv_fit(sampler, prompt_tokens: int, new_tokens: int) -> dict:
    """The KV a sample of new_tokens holds (whole blocks) and how many samples of one prompt the pool
    holds at once (plan's count, on the pool's real size)."""
    pool = sampler.engine.pool
    per_token = kv_bytes_per_token(sampler.model.cfg, pool.k.dtype)
    return {"bytes_per_token": per_token, "block_size": pool.block_size, "blocks_total": pool.capacity,
            "new_tokens": new_tokens,
            "bytes_per_sample": cdiv(new_tokens, pool.block_size) * pool.block_size * per_token,
            "samples_fit": samples_that_fit(pool.capacity * pool.block_size * per_token, per_token, prompt_tokens,
                                            new_tokens, pool.block_size)}


def profile(sampler, ns: list[int], prompt_ids: list[int], new_tokens: int, top_p: float, repeats: int,
            bandwidth: float, peak: Optional[float]) -> list[dict]:
    """measure() at each n, with the step's bytes and FLOPs (plan's formulas), MBU against `bandwidth`,
    MFU against `peak` (None: omitted), and the tokens/s that the step, its matmul floor, the memory and
    the compute limits allow."""
    cfg, dtype, p = sampler.config, sampler.engine.pool.k.dtype, len(prompt_ids)
    rows = []
    for n in ns:
        r = measure(sampler, prompt_ids, n, top_p, new_tokens, repeats)
        if r["batch"] != n:
            raise InvalidInput(f"n={n}: only {r['batch']} samples ran at once: raise --max-batch-size or "
                               "--kv-cache-memory")
        step_s, step_bytes = r["step_ms"] / 1e3, decode_step_bytes(cfg, dtype, n, p, r["suffix_tokens"])
        step_flops = decode_step_flops(cfg, n, p, r["suffix_tokens"])
        r.update(step_bytes=step_bytes, step_flops=step_flops, step_over_floor=r["step_ms"] / r["floor_ms"],
                 mbu=step_bytes / bandwidth / step_s, mfu=step_flops / peak / step_s if peak else None,
                 tokens_per_s={"step": n / step_s, "matmul floor": n / (r["floor_ms"] / 1e3),
                               "memory": n * bandwidth / step_bytes,
                               "compute": n * peak / step_flops if peak else None})
        rows.append(r)
    return rows
