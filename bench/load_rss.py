"""Peak host memory while loading a 4-shard random checkpoint, against its size.

Writes a random Llama-shaped checkpoint in bfloat16 as 4 safetensors shards with an index, then
loads it in a fresh process per case and reads the process's peak resident set (VmHWM) from
/proc/self/status. Cases: our streamed loader into float32 and bfloat16, and, as the baseline, the
previous loader's pattern (read every shard into memory, then cast). On CPU the model itself lives
in host memory, so the streamed loader's ideal is "model size + one tensor" above the process's
memory before loading; the shard being read is memory-mapped, and its pages count as resident
(reclaimable page cache) until the shard is closed.

    python bench/load_rss.py [--dir /tmp/rss-ckpt] [--layers 16] [--hidden 1024]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

MB = 1 << 20


def vm(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def write_checkpoint(path: Path, layers: int, hidden: int, vocab: int = 32000) -> int:
    """Random bf16 weights in 4 shards (a few layers each); returns the bytes written."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    path.mkdir(parents=True, exist_ok=True)
    inter = hidden * 11 // 4
    LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64).save_pretrained(path)
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + f"self_attn.{x}_proj.weight": (hidden, hidden) for x in "qkvo"}
        shapes |= {p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                   p + "mlp.down_proj.weight": (hidden, inter),
                   p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
    names = list(shapes)
    weight_map, total = {}, 0
    for s in range(4):
        file = f"model-{s + 1:05d}-of-00004.safetensors"
        part = names[s * len(names) // 4:(s + 1) * len(names) // 4]
        tensors = {n: torch.randn(shapes[n], dtype=torch.bfloat16) * 0.02 for n in part}
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map |= dict.fromkeys(part, file)
        del tensors
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def measure(path: Path, how: str, dtype: str) -> dict:
    """Runs in the child process: load, then report memory before, peak, and the model's bytes."""
    from budget_sampler.models import load_hf_config, load_model, parse_dtype
    config = load_hf_config(path)
    before = vm("VmRSS")
    if how == "streamed":
        model = load_model(path, config, "cpu", parse_dtype(dtype))
        size = sum(p.numel() * p.element_size() for p in model.parameters())
    else:  # the previous loader's pattern: every shard in memory, then the cast copy
        from safetensors.torch import load_file
        state = {}
        for file in sorted(path.glob("*.safetensors")):
            state |= load_file(str(file))
        cast = {k: v.to(parse_dtype(dtype)) for k, v in state.items()}
        size = sum(v.numel() * v.element_size() for v in cast.values())
    return {"loader": how, "dtype": dtype, "rss_before_mb": before / MB, "peak_rss_mb": vm("VmHWM") / MB,
            "peak_above_before_mb": (vm("VmHWM") - before) / MB, "model_mb": size / MB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/budget-sampler-rss-ckpt")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--child", nargs=2, metavar=("LOADER", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = Path(args.dir)
    if args.child:
        print(json.dumps(measure(path, *args.child)))
        return
    size = write_checkpoint(path, args.layers, args.hidden)
    print(f"checkpoint: {path}, 4 shards, {size / MB:.0f} MB (bfloat16)")
    # the baseline casts to float32 so that every byte is read (same-dtype tensors would stay unread mmaps)
    for how, dtype in (("streamed", "bfloat16"), ("streamed", "float32"), ("read-all-then-cast", "float32")):
        out = subprocess.run([sys.executable, __file__, "--dir", str(path), "--child", how, dtype],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{how:>20} -> {dtype:<9} model {r['model_mb']:6.0f} MB   peak RSS {r['peak_rss_mb']:6.0f} MB "
              f"({r['peak_above_before_mb']:+6.0f} MB over {r['rss_before_mb']:.0f} MB before loading)")


if __name__ == "__main__":
    main()
