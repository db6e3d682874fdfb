"""End-to-end sampling throughput: our engine vs Hugging Face `generate(num_return_sequences=n)`.

Same random-weight Llama checkpoint, same prompt, same number of forced new tokens (EOS ignored),
same sampling (temperature 1, no truncation), measured in one process so the ratio is fair.
Writes the figures to bench/results/throughput_<machine>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

CONFIG = dict(vocab_size=6144, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
              bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)


def make_tokenizer(vocab_size: int):
    """A byte-level BPE trained on a few standard-library modules: realistic code tokens, offline."""
    import inspect
    import json as json_mod
    import textwrap

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    corpus = [inspect.getsource(m) for m in (json_mod, textwrap, argparse, inspect)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def make_model(path: Path) -> int:
    from transformers import AutoModelForCausalLM, LlamaConfig
    make_tokenizer(CONFIG["vocab_size"]).save_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), dtype=torch.float32)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def bench_ours(path, prompt_ids, n, new_tokens, max_batch_size):
    from sampler import Sampler, SamplingParams
    engine = Sampler.from_pretrained(str(path), max_batch_size=max_batch_size).engine
    params = SamplingParams(n=n, temperature=1.0, max_new_tokens=new_tokens, ignore_eos=True, seed=0)
    t0 = time.perf_counter()
    engine.add_request(prompt_ids, params)
    done = 0
    while engine.has_unfinished():
        done += len(engine.step())
    seconds = time.perf_counter() - t0
    assert done == n
    return n * new_tokens / seconds, seconds


def bench_hf(path, prompt_ids, n, new_tokens):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, num_return_sequences=n, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0)
    seconds = time.perf_counter() - t0
    assert out.shape == (n, len(prompt_ids) + new_tokens)
    return n * new_tokens / seconds, seconds


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
    rows = []
    with tempfile.TemporaryDirectory() as d:
        params = make_model(Path(d))
        bench_ours(Path(d), prompt_ids[:16], 4, 4, 4)  # warm-up
        for n in args.n:
            ours, ours_s = bench_ours(Path(d), prompt_ids, n, args.new_tokens, args.max_batch_size)
            hf, hf_s = bench_hf(Path(d), prompt_ids, n, args.new_tokens)
            rows.append(dict(n=n, ours_tokens_per_s=round(ours, 1), hf_tokens_per_s=round(hf, 1),
                             ratio=round(ours / hf, 2), ours_seconds=round(ours_s, 3), hf_seconds=round(hf_s, 3)))
            print(f"n={n:5d}  ours {ours:10,.0f} tok/s   HF generate {hf:9,.0f} tok/s   ratio {ours / hf:6.2f}x",
                  flush=True)
    import transformers
    result = dict(benchmark="throughput", command="python bench/throughput.py " + " ".join(argv or []),
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
