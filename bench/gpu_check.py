"""One-call GPU check: everything the kernels promise, measured in one process on a lent GPU.
Parts, in this order (most needed first: --time-limit cuts the tail):

1. correctness of every Triton kernel in bfloat16 and float16 against its torch reference;
   the fused MoE kernels too, and their time (eager and replayed from a CUDA graph) against a dense
   gate/up + down of equal active size at batch 16 / 64 / 256 on Qwen3-Coder-30B-A3B's layer;
2. end-to-end tokens/s of our engine (decode step replayed from CUDA graphs, and eager: the same
   samples) vs transformers `generate(num_return_sequences=n)` on a random-weight model of
   Qwen2.5-1.5B's shape, and the decode step's fraction of the memory roofline: minimum bytes a
   step must move / measured copy bandwidth / measured step time;
3. end to end under the paper's sampling (bench/e2e.py's run_paper: HumanEval prompts and stop
   strings, T = 0.8, top-p 0.95, real lengths, slots refilled across prompts) at n = 64, 200 and
   256, the engine's overlap on and off, against n / (the step alone at batch n), and at n = 200
   transformers' generate beside it;
4. the README's main job on this device (`budget-sampler eval --device cuda`);
5. shared-prefix attention vs torch SDPA over KV replicated per sample (and flash-attn when it is
   installed) at n in {16, 64, 256, 1024} samples and prefixes of {512, 2048, 8192} tokens;
6. micro-benchmarks of RMSNorm, SiLU-and-multiply, RoPE + KV write and sampling against their
   references.

Writes JSON (device, versions, every figure) to $OUT/gpu_check_<device>.json (or --out) and prints a
short table last. Runs from the checkout with no installs:

    python bench/gpu_check.py            # on the GPU machine, < 10 minutes
    python bench/gpu_check.py --dry-run --out x.json  # CPU, Triton interpreter, tiny shapes, < 1 minute
"""
from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
from checkout import import_paths  # noqa: E402 (bench/, the script's folder, is on sys.path)

sys.path[:0] = import_paths(ROOT)  # this checkout's packages, installed or not (the GPU machine has no registry)

import torch  # noqa: E402
from e2e import PAPER, forced_scripts, make_tokenizer, paper_step_ms, run_hf, run_ours, run_paper  # noqa: E402
from kernel_inputs import (  # noqa: E402
    QWEN3_CODER_30B_A3B_MOE,
    QWEN_1_5B,
    attention_inputs,
    flash_attn_replicated,
    moe_inputs,
    norm_inputs,
    replicated_kv,
    rope_inputs,
    sampling_inputs,
    sdpa_replicated,
)

import budget_sampler_kernels as kernels  # noqa: E402
from budget_sampler.models.shape import expected_experts  # noqa: E402
from budget_sampler_kernels import activation, attention, moe, norm, rope, sampling  # noqa: E402

QWEN2_5_1_5B = dict(  # config.json of Qwen/Qwen2.5-1.5B, weights random
    model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=151936, hidden_size=1536,
    intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
    use_sliding_window=False, sliding_window=32768, max_window_layers=21, hidden_act="silu",
    bos_token_id=151643, eos_token_id=151643)
TINY = dict(QWEN2_5_1_5B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=0,
            eos_token_id=1)

TOP_P = 0.95  # end to end: exercises the sampling kernel's truncation path

# (atol, rtol) per dtype: the kernels and the references differ by rounding only
TOL = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}


class Setup:
    """What a run measures: full sizes on CUDA, tiny ones for --dry-run on CPU."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.deadline = float("inf")  # perf_counter() past which no part starts and the attention sweep stops
        self.device = "cpu" if dry else "cuda"
        self.dtypes = [torch.float32, torch.float16] if dry else [torch.bfloat16, torch.float16]
        self.dtype = torch.float32 if dry else torch.bfloat16  # benchmarks and the end-to-end model
        self.heads = dict(heads=4, kv_heads=2, head_dim=32) if dry else \
            {k: QWEN_1_5B[k] for k in ("heads", "kv_heads", "head_dim")}
        self.vocab = 1000 if dry else QWEN_1_5B["vocab"]
        self.hidden = 64 if dry else QWEN_1_5B["hidden"]
        self.intermediate = 128 if dry else QWEN_1_5B["intermediate"]
        self.check_rows = 9 if dry else 257  # rows of the norm / rope correctness checks
        self.sample_rows = 16 if dry else 64  # rows of the sampling check, a multiple of its 8 settings
        self.attention_n = [2, 3] if dry else [16, 64, 256, 1024]
        self.attention_prefix = [17] if dry else [512, 2048, 8192]
        self.attention_suffix = 5 if dry else 64
        self.splits = [1, 4] if dry else [1, 2, 4, 8, 16]  # swept to tune the launcher's choice
        self.micro_n = 4 if dry else 256
        self.moe_n = [3] if dry else [16, 64, 256]
        self.moe_shape = dict(experts=8, top_k=2, hidden=64, inter=32) if dry else QWEN3_CODER_30B_A3B_MOE
        self.model = TINY if dry else QWEN2_5_1_5B
        self.e2e_n = [2] if dry else [16, 64, 256]
        self.paper_n, self.paper_prompts = ([3], 2) if dry else ([64, 200, 256], 16)
        self.paper_hf_n = 3 if dry else 200  # where transformers' generate is run beside
        self.prompt_tokens = 12 if dry else 512
        self.new_tokens = 4 if dry else 128

    def timer(self, fn) -> float:
        """Median milliseconds per call."""
        if self.dry:
            fn()
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return 1e3 * statistics.median(times)
        import triton.testing
        return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def environment(setup: Setup) -> dict:
    import transformers
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        import flash_attn
        flash = flash_attn.__version__
    except ImportError:
        flash = None
    cuda = setup.device == "cuda"
    return dict(device=torch.cuda.get_device_name() if cuda else f"cpu ({platform.processor() or platform.machine()})",
                dry_run=setup.dry, machine=platform.node(), python=platform.python_version(),
                torch=torch.__version__, cuda=torch.version.cuda if cuda else None, triton=triton_version,
                transformers=transformers.__version__, flash_attn=flash,
                triton_interpret=os.environ.get("TRITON_INTERPRET") == "1")


# -- 1. correctness ---------------------------------------------------------------------------------

def max_error(got, want) -> float:
    return (got.float() - want.float()).abs().max().item() if got.numel() else 0.0


def correctness(setup: Setup) -> list[dict]:
    rows = []

    def record(op, dtype, pairs, **extra):
        """pairs: (kernel output, reference output); ok when |got - want| <= atol + rtol |want|."""
        atol, rtol = TOL[dtype]
        ok = all(torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol) for got, want in pairs)
        rows.append(dict(op=op, dtype=str(dtype).removeprefix("torch."), atol=atol, rtol=rtol, ok=ok,
                         max_abs_error=max(max_error(got, want) for got, want in pairs), **extra))

    dev, h = setup.device, setup.heads
    for dtype in setup.dtypes:
        # attention: ragged groups, one launch and the split path
        suffix = 9 if setup.dry else 130
        a = attention_inputs(7, 33 if setup.dry else 1000, suffix, groups=3, device=dev, dtype=dtype, **h)
        a["suffix_lens"] = torch.randint(0, suffix + 1, (7,)).to(a["suffix_lens"])
        want = attention.shared_prefix_attention_ref(**a)
        for splits in [1, 3]:
            got = attention.shared_prefix_attention_triton(**a, splits=splits)
            record("shared_prefix_attention", dtype, [(got, want)], splits=splits)
        # Gemma 2 / 3 layers: a sliding window that cuts into the prefix, soft-capped scores (a low cap
        # that bends these scores), and both (the dry run: both only)
        window = 20 if setup.dry else 600
        for softcap, win in ((2.0, window),) if setup.dry else ((2.0, None), (None, window), (2.0, window)):
            want = attention.shared_prefix_attention_ref(**a, softcap=softcap, window=win)
            for splits in [1, 3]:
                got = attention.shared_prefix_attention_triton(**a, softcap=softcap, window=win, splits=splits)
                record("shared_prefix_attention", dtype, [(got, want)], splits=splits, softcap=softcap, window=win)
        # RMSNorm with and without the residual
        x, weight, eps, residual = norm_inputs(setup.check_rows, setup.hidden, device=dev, dtype=dtype)
        for res in (None, residual):
            got, want = norm.rms_norm_triton(x, weight, eps, res), norm.rms_norm_ref(x, weight, eps, res)
            record("rms_norm" + ("+residual" if res is not None else ""), dtype, list(zip(got, want)))
        # SiLU-and-multiply of the gate/up halves
        x = 4 * torch.randn(setup.check_rows, 2 * setup.intermediate, device=dev, dtype=dtype)
        record("silu_and_mul", dtype, [(activation.silu_and_mul_triton(x), activation.silu_and_mul_ref(x))])
        # RoPE + KV write: compare q and the written cache
        args = rope_inputs(setup.check_rows, device=dev, dtype=dtype, cache_rows=300, **h)
        k_cache, v_cache = args[5].clone(), args[6].clone()
        got = rope.rope_write_kv_triton(*args[:5], k_cache, v_cache, args[7])
        want = rope.rope_write_kv_ref(*args)
        record("rope_write_kv", dtype, [(got, want), (k_cache, args[5]), (v_cache, args[6])])
    # sampling: identical tokens where logits have no ties (float32); 16-bit logits tie, and where
    # ties straddle a top-k / top-p boundary the reference keeps an arbitrary subset of them
    # (torch.sort's order) while the kernel keeps them all, so there most tokens agree
    for dtype in [torch.float32] + setup.dtypes:
        n = setup.sample_rows
        args = list(sampling_inputs(n, setup.vocab, device=dev, dtype=dtype))
        params = [(0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (0.8, 0, 0.95, 0.0), (1.0, 50, 1.0, 0.0),
                  (0.7, 20, 0.9, 0.05), (1.2, 0, 1.0, 0.1), (1.0, 0, 0.5, 0.0), (0.6, 0, 0.99, 0.0)]
        for i, column in enumerate(zip(*params)):
            args[1 + i] = torch.tensor(column * (n // len(params)), device=dev, dtype=args[1 + i].dtype)
        tokens, logprobs = sampling.sample_triton(*args)
        want_tokens, want_logprobs = sampling.sample_ref(*args)
        same = tokens == want_tokens
        agree = same.float().mean().item()
        need = 0.98 if dtype == torch.float32 else 0.75
        error = max_error(logprobs[same], want_logprobs[same])  # a different token has another log-prob
        rows.append(dict(op="sample", dtype=str(dtype).removeprefix("torch."), token_agreement=agree,
                         logprob_max_abs_error=error, ok=bool(agree >= need and error <= 1e-3)))
    return rows


# -- 1b. fused MoE ---------------------------------------------------------------------------------

def moe_check(setup: Setup) -> list[dict]:
    """The fused MoE kernels against their reference (the same 16-bit inputs in float32) and their time
    against a dense gate/up + SiLU x up + down of the same active size (k x I wide) at batch n; on CUDA
    also replayed from a CUDA graph (capturable: no host sync), with the experts' bytes it reads."""
    import torch.nn.functional as F
    shape, rows = setup.moe_shape, []
    for n in setup.moe_n:
        for dtype in setup.dtypes:
            x, gate_up, down, weights, ids = moe_inputs(n, **shape, device=setup.device, dtype=dtype, seed=n)
            got = moe.moe_experts_triton(x, gate_up, down, weights, ids)
            want = moe.moe_experts_ref(x.float(), gate_up.float(), down.float(), weights, ids)
            atol, rtol = TOL[dtype]
            row = dict(n=n, dtype=str(dtype).removeprefix("torch."), atol=atol, rtol=rtol,
                       ok=torch.allclose(got.float(), want, atol=atol, rtol=rtol), max_abs_error=max_error(got, want))
            if dtype == setup.dtype:
                active = shape["top_k"] * shape["inter"]
                w1 = torch.randn(2 * active, shape["hidden"], device=setup.device, dtype=dtype)
                w2 = torch.randn(shape["hidden"], active, device=setup.device, dtype=dtype)
                row["ours_ms"] = setup.timer(lambda: moe.moe_experts_triton(x, gate_up, down, weights, ids))
                row["dense_ms"] = setup.timer(lambda: F.linear(activation.silu_and_mul_triton(F.linear(x, w1)), w2))
                touched = expected_experts(shape["experts"], shape["top_k"], n)
                row["expected_experts_touched"] = touched
                row["expert_bytes_read"] = touched * 3 * shape["hidden"] * shape["inter"] * dtype.itemsize
                if setup.device == "cuda":
                    out = torch.empty_like(got)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        out.copy_(moe.moe_experts_triton(x, gate_up, down, weights, ids))
                    graph.replay()
                    row["graph_equals_eager"] = torch.equal(out, got)
                    row["ok"] = row["ok"] and row["graph_equals_eager"]
                    row["ours_graph_ms"] = setup.timer(graph.replay)
                    row["graph_bytes_per_s"] = row["expert_bytes_read"] / (row["ours_graph_ms"] / 1e3)
                row["ours_over_dense"] = row["ours_ms"] / row["dense_ms"]  # both eager
            rows.append(row)
    return rows


# -- 4. prefix attention vs replicated KV -----------------------------------------------------------

def attention_benchmark(setup: Setup) -> list[dict]:
    rows, flash = [], flash_attn_replicated() if setup.device == "cuda" else None
    for prefix in setup.attention_prefix:
        for n in setup.attention_n:
            if time.perf_counter() > setup.deadline:
                return rows
            a = attention_inputs(n, prefix, setup.attention_suffix, device=setup.device, dtype=setup.dtype,
                                 **setup.heads)
            ours = setup.timer(lambda: attention.shared_prefix_attention_triton(**a))
            plan = attention.launch_plan(a["q"], a["prefix_k"], a["prefix_tables"], a["suffix_k"], a["suffix_tables"])
            by_splits = {s: setup.timer(lambda: attention.shared_prefix_attention_triton(**a, splits=s))
                         for s in setup.splits}
            q, k, v = replicated_kv(a)
            sdpa = setup.timer(lambda: sdpa_replicated(q, k, v, a["scale"]))
            row = dict(n=n, prefix=prefix, suffix=setup.attention_suffix, ours_ms=ours, sdpa_replicated_ms=sdpa,
                       speedup_vs_sdpa=sdpa / ours, path="single launch" if plan.splits == 1 else "split",
                       splits=plan.splits, block_m=plan.block_m, ours_ms_by_splits=by_splits,
                       replicated_kv_bytes=2 * k.numel() * k.element_size())
            if flash is not None:
                row["flash_attn_replicated_ms"] = setup.timer(lambda: flash(q, k, v, a["scale"]))
                row["speedup_vs_flash_attn"] = row["flash_attn_replicated_ms"] / ours
            rows.append(row)
            q = k = v = a = None  # free them before emptying the cache
            if setup.device == "cuda":
                torch.cuda.empty_cache()
    return rows


# -- 5. micro-benchmarks ----------------------------------------------------------------------------

def micro_benchmarks(setup: Setup) -> list[dict]:
    n, dev, dt = setup.micro_n, setup.device, setup.dtype
    cases = [
        ("rms_norm+residual", norm, "rms_norm", norm_inputs(n, setup.hidden, device=dev, dtype=dt)),
        ("silu_and_mul", activation, "silu_and_mul",
         (torch.randn(n, 2 * setup.intermediate, device=dev, dtype=dt),)),
        ("rope_write_kv", rope, "rope_write_kv", rope_inputs(n, device=dev, dtype=dt, **setup.heads)),
        ("sample T=1", sampling, "sample", sampling_inputs(n, setup.vocab, device=dev, dtype=dt, top_p=1.0)),
        ("sample top_p=0.95", sampling, "sample", sampling_inputs(n, setup.vocab, device=dev, dtype=dt)),
        ("sample top_k=50", sampling, "sample", sampling_inputs(n, setup.vocab, device=dev, dtype=dt, top_k=50,
                                                                top_p=1.0)),
    ]
    rows = []
    for name, module, fn, args in cases:
        ours = setup.timer(lambda: getattr(module, f"{fn}_triton")(*args))
        ref = setup.timer(lambda: getattr(module, f"{fn}_ref")(*args))
        rows.append(dict(op=name, n=n, ours_ms=ours, torch_ref_ms=ref, speedup=ref / ours))
    return rows


# -- 2. end to end and the memory roofline ----------------------------------------------------------

def copy_bandwidth(setup: Setup) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    numel = (1 << 20) if setup.dry else (1 << 29)  # 2 GiB of bfloat16 on the GPU
    src = torch.empty(numel, dtype=torch.bfloat16, device=setup.device)
    dst = torch.empty_like(src)
    ms = setup.timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms / 1e3)


def make_checkpoint(setup: Setup, path: Path) -> int:
    """Random weights of the configured shape saved with save_pretrained; returns parameter count."""
    from transformers import AutoModelForCausalLM, Qwen2Config
    make_tokenizer(512).save_pretrained(path)
    torch.manual_seed(0)
    with torch.device(setup.device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**setup.model), dtype=setup.dtype)
    model.save_pretrained(path)
    count = sum(p.numel() for p in model.parameters())
    del model
    return count


def end_to_end(setup: Setup) -> dict:
    """Each side is loaded, run at every n and freed in turn; one side failing leaves the others'
    figures (and its traceback under `errors`)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from budget_sampler import Sampler
    from budget_sampler.plan import decode_step_bytes
    bandwidth = copy_bandwidth(setup)
    previous = kernels.get_backend()
    kernels.set_backend("triton")  # on CUDA that is what "auto" picks; on CPU it runs the interpreter
    # the decode step replayed from CUDA graphs (the default on CUDA) and run eagerly
    modes = [True, False] if setup.device == "cuda" else [False]
    runs, hf, load_seconds, errors = {}, {}, {}, {}
    try:
        with tempfile.TemporaryDirectory() as d:
            params = make_checkpoint(setup, Path(d))
            prompt_ids = torch.randint(2, 512, (setup.prompt_tokens,),
                                       generator=torch.Generator().manual_seed(1)).tolist()
            for graphs in modes:
                name = f"ours_cuda_graphs={graphs}"
                try:
                    t = time.perf_counter()
                    ours = Sampler.from_pretrained(d, device=setup.device, dtype=setup.dtype,
                                                   max_batch_size=max(setup.e2e_n), cuda_graphs=graphs)
                    load_seconds[name] = time.perf_counter() - t  # with graphs: includes their capture
                    runs[graphs] = {n: run_ours(ours, prompt_ids, n, setup.new_tokens, TOP_P) for n in setup.e2e_n}
                except Exception:
                    errors[name] = traceback.format_exc()
                ours = None
                release(setup)
            try:
                model = AutoModelForCausalLM.from_pretrained(d, dtype=setup.dtype).to(setup.device).eval()
                hf = {n: run_hf(model, prompt_ids, n, setup.new_tokens, TOP_P) for n in setup.e2e_n}
            except Exception:
                errors["hf_generate"] = traceback.format_exc()
            model = None
            release(setup)
    finally:
        kernels.set_backend(previous)
    rows = []
    for n in setup.e2e_n:
        # bytes at the median decode step: each sample is about half way through its generation
        step_bytes = decode_step_bytes(Qwen2Config(**setup.model), setup.dtype, n, setup.prompt_tokens,
                                       setup.new_tokens // 2)
        row = dict(n=n, decode_step_bytes=step_bytes)
        for graphs in modes:
            if graphs in runs:
                r, key = runs[graphs][n], "ours_" if graphs == modes[0] else "eager_"
                row.update({f"{key}tokens_per_s": r["tokens_per_s"], f"{key}seconds": r["seconds"],
                            f"{key}decode_step_ms": r["decode_step_ms"],
                            f"{key}roofline_fraction": step_bytes / bandwidth / (r["decode_step_ms"] / 1e3),
                            f"{key}stats": r["stats"]})
        if n in hf:
            row.update(hf_tokens_per_s=hf[n]["tokens_per_s"], hf_seconds=hf[n]["seconds"])
            if "ours_tokens_per_s" in row:
                row["speedup_vs_hf"] = row["ours_tokens_per_s"] / row["hf_tokens_per_s"]
        if len(runs) == 2:
            # same seeds, same kernels and splits: replaying the graphs must give the eager step's
            # samples; with random weights (near-flat distributions) one rounding difference parts
            # two samples for good, so the share of tokens before they part shows how early
            pairs = list(zip(runs[True][n]["samples"], runs[False][n]["samples"]))
            row.update(graphs_over_eager=row["ours_tokens_per_s"] / row["eager_tokens_per_s"],
                       graphs_same_samples_as_eager=sum(a == b for a, b in pairs) / len(pairs),
                       graphs_same_tokens_before_parting=statistics.mean(common_prefix(a, b) / len(a)
                                                                         for a, b in pairs))
        rows.append(row)
    return dict(model=dict(setup.model, parameters=params), dtype=str(setup.dtype).removeprefix("torch."),
                prompt_tokens=setup.prompt_tokens, new_tokens=setup.new_tokens, cuda_graphs=modes[0],
                sampling=dict(temperature=1.0, top_p=TOP_P), copy_bandwidth_bytes_per_s=bandwidth,
                load_seconds=load_seconds, results=rows, errors=errors)


def common_prefix(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def release(setup: Setup) -> None:
    gc.collect()
    if setup.device == "cuda":
        torch.cuda.empty_cache()


def paper(setup: Setup) -> dict:
    """Tokens/s under the paper's sampling with real lengths and stops, the engine's overlap on and
    off (CUDA only), against the ideal n / step time (issue 21's bar: >= 0.9 of it); at
    paper_hf_n also transformers' generate on the first prompt, its length forced to the runs' mean
    (it has no stop strings to check, which only favours it)."""
    from transformers import AutoModelForCausalLM

    from budget_sampler import Sampler
    rows = []
    with tempfile.TemporaryDirectory() as d:
        make_checkpoint(setup, Path(d))
        for n in setup.paper_n:
            sampler = Sampler.from_pretrained(d, device=setup.device, dtype=setup.dtype, max_batch_size=n)
            scripts = forced_scripts(sampler, n, setup.paper_prompts)
            runs = {}
            for overlap in ([True, False] if setup.device == "cuda" else [False]):
                sampler.engine.overlap = overlap
                runs["overlap" if overlap else "in_turn"] = run_paper(sampler, scripts, n)
            run = next(iter(runs.values()))
            step_ms = paper_step_ms(sampler, scripts, run, repeats=3 if setup.dry else 10)
            row = dict(n=n, step_ms=step_ms, ideal_tokens_per_s=n / step_ms * 1e3)
            rows.append(dict(row, **{mode: dict(r, share_of_ideal=r["tokens_per_s"] / row["ideal_tokens_per_s"])
                                     for mode, r in runs.items()}))
            prompt_ids = sampler.encode(next(iter(scripts)))
            del sampler
            release(setup)
            if n == setup.paper_hf_n:
                model = AutoModelForCausalLM.from_pretrained(d, dtype=setup.dtype).to(setup.device).eval()
                hf = run_hf(model, prompt_ids, n, round(run["mean_new_tokens"]), PAPER["top_p"])
                rows[-1]["hf"] = dict(hf, speedup=run["tokens_per_s"] / hf["tokens_per_s"])
                del model
                release(setup)
    return dict(prompts=setup.paper_prompts, rows=rows)


# -- 4. the main job ------------------------------------------------------------------------------

def main_job(setup: Setup) -> dict:
    """The README's main job (the toy ladder's budget-matched evaluation, sandboxed tests included)
    on this device, run as a user runs it: the CLI, in a subprocess."""
    args = ["eval", "--device", setup.device] + (["--limit", "2", "--n", "2", "--models", "toy-xs,toy-s"]
                                                 if setup.dry else [])
    with tempfile.TemporaryDirectory() as d:
        run = subprocess.run([sys.executable, "-m", "budget_sampler.cli", *args, "--out", d], cwd=ROOT,
                             capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(import_paths(ROOT))))
        if run.returncode != 0:
            raise RuntimeError(f"budget-sampler eval exited {run.returncode}:\n{run.stderr[-4000:]}")
        report = json.loads(Path(d, "report.json").read_text())
    keys = ("pass@k", "greedy_pass@1", "tokens_per_second", "seconds_per_sample", "mean_new_tokens", "kv_cache")
    return dict(command="budget-sampler " + " ".join(args), config=report["config"], hardware=report["hardware"],
                models={name: {k: m[k] for k in keys} for name, m in report["models"].items()})


# -- report -----------------------------------------------------------------------------------------

def table(result: dict) -> str:
    """The figures as text; a part that failed or was skipped shows as one line."""
    env = result["environment"]
    lines = [f"gpu_check on {env['device']}: torch {env['torch']}, triton {env['triton']}, "
             f"transformers {env['transformers']}" + (" [dry run]" if env["dry_run"] else "")]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for name in PARTS:
        part = result.get(name)
        if part is None or "error" in part:
            lines.append(f"{name}: " + ("skipped (time limit)" if part is None else "FAILED, see its traceback"))
            continue
        if name == "correctness":
            bad = [r for r in part["rows"] if not r["ok"]]
            lines.append(f"correctness: {len(part['rows']) - len(bad)}/{len(part['rows'])} ok"
                         + "".join(f"\n  FAILED {r}" for r in bad))
        elif name == "moe":
            lines.append("fused MoE    n   dtype   ok   ours ms   graph ms   dense ms   ours/dense   experts GB/s")
            for r in part["rows"]:
                if "ours_ms" in r:
                    rate = r.get("graph_bytes_per_s")
                    lines.append(f"{'':9}{r['n']:5d}  {r['dtype']:>6}  {r['ok']!s:>5}  {r['ours_ms']:8.3f}"
                                 f"  {fmt(r.get('ours_graph_ms'), '9.3f')}  {r['dense_ms']:9.3f}"
                                 f"  {r['ours_over_dense']:10.2f}x  {fmt(rate and rate / 1e9, '12.0f')}")
        elif name == "attention":
            lines.append("prefix attention    n  prefix   ours ms   SDPA-replicated ms   speedup   splits")
            for r in part["rows"]:
                lines.append(f"{'':16}{r['n']:5d}  {r['prefix']:6d}  {r['ours_ms']:8.3f}  "
                             f"{r['sdpa_replicated_ms']:19.3f}  {r['speedup_vs_sdpa']:7.1f}x  {r['splits']:7d}")
        elif name == "micro":
            lines.append("micro                      op   ours ms   torch ms   speedup")
            for r in part["rows"]:
                lines.append(f"  {r['op']:>22}  {r['ours_ms']:8.3f}  {r['torch_ref_ms']:9.3f}  {r['speedup']:7.1f}x")
        elif name == "paper":
            lines.append("paper's sampling    n   step ms   ideal tok/s   overlap tok/s (share, host)"
                         "   in turn tok/s (share, host)")
            for r in part["rows"]:
                cells = [f"{r[m]['tokens_per_s']:13.0f} ({r[m]['share_of_ideal']:.2f}, {r[m]['host_share']:.0%})"
                         if m in r else f"{'-':>13}" for m in ("overlap", "in_turn")]
                lines.append(f"{'':16}{r['n']:5d}  {r['step_ms']:8.2f}  {r['ideal_tokens_per_s']:12.0f}  "
                             + "   ".join(cells)
                             + (f"   HF {r['hf']['tokens_per_s']:.0f} tok/s: {r['hf']['speedup']:.1f}x" if "hf" in r
                                else ""))
        elif name == "main_job":
            lines.append(f"main job ({part['command']}): {part['seconds']:.0f} s; pass@k at the largest k: "
                         + ", ".join(f"{model} {list(m['pass@k'].values())[-1]:.3f}"
                                     for model, m in part["models"].items()))
        else:
            lines.append(f"end to end (prompt {part['prompt_tokens']}, {part['new_tokens']} new, copy "
                         f"{part['copy_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s, cuda_graphs={part['cuda_graphs']}"
                         + "".join(f"; {k} FAILED" for k in part["errors"]) + ")")
            lines.append("    n   ours tok/s   HF tok/s   speedup   step ms   roofline   eager tok/s   eager step ms"
                         "   eager roofline   same samples")
            for r in part["results"]:
                roof, eager_roof = r.get("ours_roofline_fraction"), r.get("eager_roofline_fraction")
                lines.append(f"{r['n']:5d}  {fmt(r.get('ours_tokens_per_s'), '11.0f')}"
                             f"  {fmt(r.get('hf_tokens_per_s'), '9.0f')}"
                             f"  {fmt(r.get('speedup_vs_hf'), '7.2f')}x  {fmt(r.get('ours_decode_step_ms'), '8.2f')}"
                             f"  {fmt(roof and 100 * roof, '8.1f')}%  {fmt(r.get('eager_tokens_per_s'), '12.0f')}"
                             f"  {fmt(r.get('eager_decode_step_ms'), '14.2f')}"
                             f"  {fmt(eager_roof and 100 * eager_roof, '15.1f')}%"
                             f"  {fmt(r.get('graphs_same_samples_as_eager'), '13.2f')}")
    return "\n".join(lines)


# most needed first: a time limit cuts the tail
PARTS = ["correctness", "moe", "end_to_end", "paper", "main_job", "attention", "micro"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny shapes (< 1 minute)")
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/gpu_check_<device>.json)")
    ap.add_argument("--time-limit", type=float, default=420,
                    help="seconds; parts that would start later are skipped (the JSON says which)")
    args = ap.parse_args(argv)
    setup = Setup(args.dry_run)
    if not setup.dry and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    setup.deadline = t0 + args.time_limit
    result = dict(command="python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  environment=environment(setup))
    slug = re.sub(r"[^a-z0-9]+", "-", result["environment"]["device"].lower()).strip("-")
    out = Path(args.out) if args.out else Path(os.environ.get("OUT", ".")) / f"gpu_check_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    functions = dict(correctness=correctness, moe=moe_check, end_to_end=end_to_end, paper=paper, main_job=main_job,
                     attention=attention_benchmark, micro=micro_benchmarks)
    for name in PARTS:
        if time.perf_counter() > setup.deadline:
            print(f"[{time.perf_counter() - t0:6.1f}s] {name} skipped: past --time-limit", flush=True)
            continue
        t = time.perf_counter()
        try:
            part = functions[name](setup)
            result[name] = part if isinstance(part, dict) else dict(rows=part)
        except Exception:
            result[name] = dict(error=traceback.format_exc())
            print(result[name]["error"], file=sys.stderr, flush=True)
        result[name]["seconds"] = time.perf_counter() - t
        print(f"[{time.perf_counter() - t0:6.1f}s] {name} " + ("FAILED" if "error" in result[name] else "done")
              + f" in {time.perf_counter() - t:.1f}s", flush=True)
        result["seconds"] = time.perf_counter() - t0
        out.write_text(json.dumps(result, indent=2) + "\n")  # after every part: a killed run keeps the rest
    print(f"wrote {out}")
    print(table(result))
    complete = all(name in result and "error" not in result[name] and not result[name].get("errors")
                   for name in PARTS)
    return 0 if complete and all(r["ok"] for part in ("correctness", "moe") for r in result[part]["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
