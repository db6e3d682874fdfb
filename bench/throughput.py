"""End-to-end sampling throughput: our engine vs Hugging Face `generate(num_return_sequences=n)`.

Same random-weight Llama checkpoint, same prompt, same number of forced new tokens (EOS ignored),
same sampling (temperature 1, no truncation), measured in one process so the ratio is fair.
Writes the figures to bench/results/throughput_<machine>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from e2e import make_tokenizer, run_hf, run_ours

CONFIG = dict(vocab_size=6144, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
              bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)


def make_model(path: Path) -> int:
    from transformers import AutoModelForCausalLM, LlamaConfig
    make_tokenizer(CONFIG["vocab_size"]).save_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), dtype=torch.float32)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/throughput_<machine>.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    prompt_ids = torch.randint(2, CONFIG["vocab_size"], (args.prompt_tokens,)).tolist()
    from sampler import Sampler
    from transformers import AutoModelForCausalLM
    rows = []
    with tempfile.TemporaryDirectory() as d:
        params = make_model(Path(d))
        ours_sampler = Sampler.from_pretrained(d, max_batch_size=args.max_batch_size)
        hf_model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        for n in args.n:
            ours = run_ours(ours_sampler, prompt_ids, n, args.new_tokens)
            hf = run_hf(hf_model, prompt_ids, n, args.new_tokens)
            ratio = ours["tokens_per_s"] / hf["tokens_per_s"]
            rows.append(dict(n=n, ours_tokens_per_s=round(ours["tokens_per_s"], 1),
                             hf_tokens_per_s=round(hf["tokens_per_s"], 1), ratio=round(ratio, 2),
                             ours_seconds=round(ours["seconds"], 3), hf_seconds=round(hf["seconds"], 3),
                             ours_decode_step_ms=round(ours["decode_step_ms"], 2)))
            print(f"n={n:5d}  ours {ours['tokens_per_s']:10,.0f} tok/s   HF generate {hf['tokens_per_s']:9,.0f} tok/s"
                  f"   ratio {ratio:6.2f}x", flush=True)
    import transformers
    result = dict(benchmark="throughput", command=" ".join(["python bench/throughput.py", *(sys.argv[1:] if argv is None else argv)]),
                  machine=platform.node(), processor=platform.processor() or platform.machine(),
                  threads=args.threads, device="cpu", torch=torch.__version__, transformers=transformers.__version__,
                  model=dict(CONFIG, parameters=params), prompt_tokens=args.prompt_tokens,
                  new_tokens=args.new_tokens, max_batch_size=args.max_batch_size, results=rows)
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "throughput_cpu-2core.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
