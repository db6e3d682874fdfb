"""End-to-end sampling throughput: our engine vs Hugging Face `generate(num_return_sequences=n)`,
and our decode step against its matmul floor.

Same random-weight Llama checkpoint, same prompt, same number of forced new tokens (EOS ignored),
same sampling, measured in one process: each figure is the median of --repeats runs, ours and HF
alternating. The matmul floor is the time of the step's linear layers alone (q/k/v, o, gate/up,
down, LM head) at the same batch, timed in the same run; a decode step can't beat it on CPU.
Shapes: `mha` (d=256, 4 layers, 4 heads, ffn 688, vocab 6144, no truncation) and `gqa` (d=256,
4 layers, 4 heads / 2 KV heads, ffn 1024, vocab 4096, top-p 0.95).
Writes bench/results/throughput_<machine>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from e2e import make_tokenizer, run_hf, run_ours

from budget_sampler.profiling import matmul_floor_ms

BASE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=1024,
            bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
SHAPES = {
    "mha": dict(config=dict(BASE, vocab_size=6144, intermediate_size=688, num_key_value_heads=4), top_p=1.0),
    "gqa": dict(config=dict(BASE, vocab_size=4096, intermediate_size=1024, num_key_value_heads=2), top_p=0.95),
}


def make_model(path: Path, config: dict) -> int:
    from transformers import AutoModelForCausalLM, LlamaConfig
    make_tokenizer(config["vocab_size"]).save_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**config), dtype=torch.float32)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def bench_shape(name: str, ns: list[int], args) -> dict:
    from transformers import AutoModelForCausalLM

    from budget_sampler import Sampler
    shape = SHAPES[name]
    torch.manual_seed(1)
    prompt_ids = torch.randint(2, shape["config"]["vocab_size"], (args.prompt_tokens,)).tolist()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        params = make_model(Path(d), shape["config"])
        ours_sampler = Sampler.from_pretrained(d, max_batch_size=args.max_batch_size)
        hf_model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        for n in ns:
            ours, hf = [], []
            for _ in range(args.repeats):  # alternate, so drifts of a busy machine hit both sides
                ours.append(run_ours(ours_sampler, prompt_ids, n, args.new_tokens, top_p=shape["top_p"]))
                hf.append(run_hf(hf_model, prompt_ids, n, args.new_tokens, top_p=shape["top_p"]))
            floor = matmul_floor_ms(ours_sampler.model, n)
            med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
            row = dict(n=n, ours_tokens_per_s=round(med(ours, "tokens_per_s"), 1),
                       hf_tokens_per_s=round(med(hf, "tokens_per_s"), 1),
                       ratio=round(statistics.median(o["tokens_per_s"] / h["tokens_per_s"]
                                                     for o, h in zip(ours, hf)), 2),
                       ours_decode_step_ms=round(med(ours, "decode_step_ms"), 2), matmul_floor_ms=round(floor, 2),
                       step_over_floor=round(med(ours, "decode_step_ms") / floor, 2),
                       ours_runs_tokens_per_s=[round(r["tokens_per_s"]) for r in ours],
                       hf_runs_tokens_per_s=[round(r["tokens_per_s"]) for r in hf])
            rows.append(row)
            print(f"{name} n={n:4d}  ours {row['ours_tokens_per_s']:8,.0f} tok/s  "
                  f"HF {row['hf_tokens_per_s']:7,.0f} tok/s"
                  f"  ratio {row['ratio']:5.2f}x  step {row['ours_decode_step_ms']:6.2f} ms = "
                  f"{row['step_over_floor']:.2f}x matmul floor ({row['matmul_floor_ms']:.2f} ms)", flush=True)
    return dict(model=dict(shape["config"], parameters=params), top_p=shape["top_p"], results=rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--shape", choices=["mha", "gqa", "both"], default="both")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each side; medians are reported")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/throughput_cpu-2core.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = ["mha", "gqa"] if args.shape == "both" else [args.shape]
    results = {name: bench_shape(name, args.n, args) for name in shapes}
    import transformers
    result = dict(benchmark="throughput",
                  command=" ".join(["python bench/throughput.py", *(sys.argv[1:] if argv is None else argv)]),
                  machine=platform.node(), processor=platform.processor() or platform.machine(),
                  threads=args.threads, device="cpu", torch=torch.__version__, transformers=transformers.__version__,
                  prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, max_batch_size=args.max_batch_size,
                  repeats=args.repeats, shapes=results)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "throughput_cpu-2core.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
