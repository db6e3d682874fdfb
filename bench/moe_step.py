"""A small mixture-of-experts model's decode step against a dense model of equal active parameters, on CPU.

Issue 34's target: the MoE step within 3x the dense one (the CPU path groups a step's tokens by expert
and runs one matmul per expert that got a token, so its cost is the dense model's matmuls in smaller
pieces plus the routing). Both models are random-weight Qwen3 shapes written with save_pretrained (no
downloads): a qwen3_moe with top-k of E experts of width I, and a dense qwen3 whose MLP is k x I wide,
so their active matmul parameters are equal but for the router (E x hidden a layer). The step is
budget_sampler.profiling.measure's (as `budget-sampler profile`), at batch n; runs alternate
dense, MoE, dense, MoE, ... and the medians are compared. Needs an otherwise idle machine.

    python bench/moe_step.py                                  # 3 alternating runs at n = 16 and 64
    python bench/moe_step.py --runs 1 --n 16 --repeats 5      # a quick rehearsal

Writes bench/results/moe_step_<machine>.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import import_paths  # noqa: E402 (bench/, the script's folder, is on sys.path)

sys.path[:0] = import_paths(ROOT)

import torch  # noqa: E402
from e2e import make_tokenizer  # noqa: E402

from budget_sampler import Sampler  # noqa: E402
from budget_sampler.models.shape import ModelShape  # noqa: E402
from budget_sampler.profiling import measure  # noqa: E402

BASE = dict(vocab_size=512, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
            head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False,
            bos_token_id=0, eos_token_id=1)
EXPERTS, TOP_K, EXPERT_WIDTH = 64, 8, 128
MODELS = {"dense": ("qwen3", dict(intermediate_size=TOP_K * EXPERT_WIDTH)),
          "moe": ("qwen3_moe", dict(intermediate_size=TOP_K * EXPERT_WIDTH, moe_intermediate_size=EXPERT_WIDTH,
                                    num_experts=EXPERTS, num_experts_per_tok=TOP_K, norm_topk_prob=True))}


def save(path: Path, model_type: str, overrides: dict) -> dict:
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(model_type, **BASE, **overrides)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(path)
    make_tokenizer(BASE["vocab_size"]).save_pretrained(path)
    shape = ModelShape.from_config(config)
    return dict(config=config.to_diff_dict(), parameters=shape.parameters,
                active_matmul_parameters=shape.active_matmul_parameters)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--runs", type=int, default=3, help="alternating runs per model (medians over them)")
    ap.add_argument("--repeats", type=int, default=10, help="steps timed per run (their median is the run's)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    prompt = torch.randint(2, BASE["vocab_size"], (args.prompt_tokens,),
                           generator=torch.Generator().manual_seed(1)).tolist()
    steps = {(name, n): [] for name in MODELS for n in args.n}
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        models = {name: save(Path(d) / name, *spec) for name, spec in MODELS.items()}
        samplers = {name: Sampler.from_pretrained(str(Path(d) / name), max_batch_size=max(args.n))
                    for name in MODELS}
        for run in range(args.runs):
            for n in args.n:
                for name, sampler in samplers.items():
                    ms = measure(sampler, prompt, n, 1.0, args.new_tokens, args.repeats)["step_ms"]
                    steps[name, n].append(ms)
                    print(f"run {run}: {name} n={n}: step {ms:.2f} ms", flush=True)
    rows = []
    for n in args.n:
        dense, moe = (statistics.median(steps[name, n]) for name in MODELS)
        rows.append(dict(n=n, dense_step_ms=dense, moe_step_ms=moe, moe_over_dense=moe / dense,
                         within_3x=moe <= 3 * dense, dense_runs_ms=steps["dense", n], moe_runs_ms=steps["moe", n]))
        print(f"n={n}: dense {dense:.2f} ms, MoE {moe:.2f} ms: {moe / dense:.2f}x")
    machine = f"cpu-{torch.get_num_threads()}core"
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"moe_step_{machine}.json"
    command = "python bench/moe_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out.write_text(json.dumps(dict(command=command,
                                   device="cpu", machine=platform.node(), processor=platform.processor(),
                                   threads=torch.get_num_threads(), torch=torch.__version__, models=models,
                                   prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, results=rows),
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
