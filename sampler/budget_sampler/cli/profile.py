"""`budget-sampler profile`: a model's decode step on this device at each n, measured with the engine
as eval runs it (budget_sampler/profiling.py): a table on stdout, DIR/profile.json and DIR/profile.png."""
from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import torch

from ..errors import InvalidInput
from ..jsonl import write_atomic
from ..models import check_device
from ..profiling import GROUPS, copy_bandwidth, kv_fit, peak_flops, profile, tokens_per_sample
from .common import add_model_arguments, load_sampler

HELP = "time a model's decode step at each n: matmul floor, MBU / MFU, where the step goes, KV per sample"
PROMPT_TOKENS = 512


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--n", type=int, nargs="+", default=[16, 64, 256],
                   help="samples decoded together (default: 16 64 256)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help=f"prompt length (default: {PROMPT_TOKENS}, or what the context leaves after --new-tokens)")
    p.add_argument("--new-tokens", type=int, default=128,
                   help="tokens per sample: the step is timed half way through them (default: 128)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--repeats", type=int, default=10, help="steps timed per n; the median is reported (default: 10)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak for MFU (default on CUDA: the dense peak of a known GPU, H100 / H200 / "
                        "A100; on CPU MFU is omitted without it)")
    p.add_argument("--bandwidth", type=float, default=None, metavar="GBPS",
                   help="memory bandwidth for MBU, GB/s (default: a device copy, measured)")
    p.add_argument("--out", default=".", help="directory for profile.json and profile.png (default: .)")


def _check(args: argparse.Namespace) -> None:
    for name in ("new_tokens", "repeats", "max_batch_size") + (("prompt_tokens",) if args.prompt_tokens else ()):
        if getattr(args, name) < 1:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: must be >= 1")
    if min(args.n) < 1 or max(args.n) > args.max_batch_size:
        bad = min(args.n) if min(args.n) < 1 else max(args.n)
        raise InvalidInput(f"--n {bad} is invalid: must be in [1, --max-batch-size={args.max_batch_size}]")
    for name in ("peak_tflops", "bandwidth"):
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            raise InvalidInput(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: must be > 0")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise InvalidInput(f"--device {args.device!r} is unknown: give cpu or cuda[:i]")
    if args.tensor_parallel != 1:
        raise InvalidInput("--tensor-parallel is not supported: profile times one engine in this process")
    check_device(args.device)


def main(args: argparse.Namespace) -> int:
    _check(args)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # before the model loads: the copy needs memory the KV pool would take
    bandwidth = 1e9 * args.bandwidth if args.bandwidth else copy_bandwidth(device, 1 << (30 if name != "cpu" else 28))
    sampler = load_sampler(args)
    dtype = sampler.engine.pool.k.dtype
    peak = 1e12 * args.peak_tflops if args.peak_tflops else peak_flops(name, dtype) if name != "cpu" else None
    new_tokens = tokens_per_sample(args.new_tokens, args.repeats)  # what the samples run to
    prompt_tokens = args.prompt_tokens or min(PROMPT_TOKENS, sampler.max_context - new_tokens)
    if prompt_tokens < 1 or prompt_tokens + new_tokens > sampler.max_context:
        raise InvalidInput(f"prompt {prompt_tokens} + {new_tokens} new tokens (--new-tokens {args.new_tokens}, "
                           f"--repeats {args.repeats}) exceed the model's context of {sampler.max_context}")
    kv = kv_fit(sampler, prompt_tokens, new_tokens)
    if max(args.n) > kv["samples_fit"]:
        raise InvalidInput(f"--n {max(args.n)}: the KV cache holds {kv['samples_fit']} samples of "
                           f"{new_tokens} tokens at once: raise --kv-cache-memory")
    prompt_ids = torch.randint(0, sampler.model.cfg.vocab_size, (prompt_tokens,),
                               generator=torch.Generator().manual_seed(1)).tolist()
    rows = profile(sampler, args.n, prompt_ids, args.new_tokens, args.top_p, args.repeats, bandwidth, peak)
    result = dict(arguments={k: v for k, v in vars(args).items() if k not in ("func", "command")}, device=name,
                  dtype=str(dtype).removeprefix("torch."), torch=torch.__version__, threads=torch.get_num_threads(),
                  cuda_graphs=bool(sampler.engine.runner.graphs), prompt_tokens=prompt_tokens,
                  new_tokens=args.new_tokens, top_p=args.top_p, repeats=args.repeats,
                  bandwidth_bytes_per_s=bandwidth,
                  bandwidth_source="--bandwidth" if args.bandwidth else "measured copy",
                  peak_flops=peak, peak_source="--peak-tflops" if args.peak_tflops else
                  "NVIDIA datasheet, dense" if peak else "none: MFU omitted (give --peak-tflops)",
                  kv_cache=kv, results=rows)
    sampler.close()
    print(describe(result))
    out = Path(args.out)
    write_atomic(out / "profile.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / "profile.png", plot(result))
    print(f"wrote {out / 'profile.json'}, {out / 'profile.png'}")
    return 0


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def describe(r: dict) -> str:
    """The tables printed (README's Profiling section shows one)."""
    kv, rows = r["kv_cache"], r["results"]
    lines = [f"{r['arguments']['model']} on {r['device']} ({r['threads']} threads), {r['dtype']}, CUDA graphs: "
             f"{'on' if r['cuda_graphs'] else 'off'}; prompt {r['prompt_tokens']} tokens, step timed at suffix "
             f"~{rows[0]['suffix_tokens']} of {r['new_tokens']} new tokens, top-p {r['top_p']}, median of "
             f"{r['repeats']} steps",
             f"bandwidth {r['bandwidth_bytes_per_s'] / 1e9:,.1f} GB/s ({r['bandwidth_source']}); peak "
             + (f"{r['peak_flops'] / 1e12:,.1f} TFLOP/s ({r['peak_source']})" if r["peak_flops"] else r["peak_source"]),
             "",
             f"{'n':>5} {'step ms':>9} {'floor ms':>9} {'step/floor':>10} {'tok/s':>9} {'MBU':>7} {'MFU':>7} "
             f"{'prefill us/token':>16}"]
    lines += [f"{x['n']:>5} {x['step_ms']:>9.3f} {x['floor_ms']:>9.3f} {x['step_over_floor']:>9.2f}x "
              f"{x['tokens_per_s']['step']:>9,.0f} {_pct(x['mbu']):>7} {_pct(x['mfu']):>7} "
              f"{1e3 * x['prefill_ms_per_token']:>16.1f}" for x in rows]
    names = list(rows[0]["parts_ms"])
    what = "device time of its kernels" if r["device"] != "cpu" else "CPU self time, with the profiler's overhead"
    lines += ["", f"where an eager step goes, ms per step (torch profiler: {what}):",
              " ".join([f"{'n':>5}"] + [f"{g:>{max(7, len(g))}}" for g in names] + [f"{'total':>7}"])]
    lines += [" ".join([f"{x['n']:>5}"] + [f"{x['parts_ms'][g]:>{max(7, len(g))}.3f}" for g in names]
                       + [f"{sum(x['parts_ms'].values()):>7.3f}"]) for x in rows]
    lines += ["", f"KV: {kv['bytes_per_token']:,} bytes per token, {kv['bytes_per_sample'] / 2 ** 20:,.2f} MiB per "
              f"sample of {kv['new_tokens']} tokens; {kv['samples_fit']:,} samples fit at once in the cache "
              f"({kv['blocks_total']:,} blocks of {kv['block_size']})"]
    return "\n".join(lines)


def plot(r: dict) -> bytes:
    """Tokens/s against n, achieved and each limit's (the roofline, per n), and the parts of an eager
    step stacked beside the measured step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, ns = r["results"], [x["n"] for x in r["results"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("step", "o-"), ("matmul floor", "s--"), ("memory", "^--"), ("compute", "v--")):
        if rows[0]["tokens_per_s"][key] is not None:
            left.plot(ns, [x["tokens_per_s"][key] for x in rows], style, label=key if key == "step" else f"{key} limit")
    left.set(xscale="log", yscale="log", xlabel="n (samples decoded together)", ylabel="tokens/s",
             title=f"{r['arguments']['model']} on {r['device']}: achieved and limits")
    left.set_xticks(ns, [str(n) for n in ns], minor=False)
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    xs, bottom = range(len(rows)), [0.0] * len(rows)
    for i, g in enumerate([*GROUPS, "other"]):
        heights = [x["parts_ms"][g] for x in rows]
        right.bar(xs, heights, 0.6, bottom=bottom, label=g, color=f"C{i}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    right.plot(xs, [x["step_ms"] for x in rows], "k_", markersize=30, markeredgewidth=2, label="step (measured)")
    right.set(xticks=list(xs), xticklabels=[str(n) for n in ns], xlabel="n", ylabel="ms per step",
              title="where an eager step goes (profiler)")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
