"""Find a checkpoint (path, short toy name, or hub id in the local HF cache) and load it.

Weights come from safetensors (one file or shards with an index); Hugging Face's separate q/k/v and
gate/up projections are concatenated into the fused matrices our model multiplies with.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import InvalidInput
from .llama import SUPPORTED_MODEL_TYPES, ModelConfig, Transformer, rope_inv_freq

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_model_path(name_or_path: str) -> Path:
    """A directory holding config.json: a local path, a shipped toy model name, or a cached hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"{path} is not a Hugging Face checkpoint: no config.json in it")
        return path
    from ..toy.ladder import resolve as resolve_toy
    toy = resolve_toy(str(name_or_path))
    if toy is not None:
        return toy
    if str(name_or_path).count("/") == 1 and not str(name_or_path).startswith((".", "/")):
        from huggingface_hub import snapshot_download
        try:
            return Path(snapshot_download(str(name_or_path), local_files_only=True))
        except Exception:
            pass
    raise InvalidInput(f"model {name_or_path!r} not found: not a directory, not a toy model name, "
                       "and not a hub id in the local Hugging Face cache (downloads are disabled)")


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise InvalidInput(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} requested but CUDA is not available")


def load_hf_config(path: Path):
    from transformers import AutoConfig
    try:
        with open(path / "config.json", encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise InvalidInput(f"{path / 'config.json'} is not a readable model config: {e}") from None
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidInput(f"model_type {model_type!r} is not supported; supported: "
                           f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return AutoConfig.from_pretrained(path)


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            return [path / name for name in sorted(set(json.load(f)["weight_map"].values()))]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InvalidInput(f"{path} has no *.safetensors weights (convert .bin checkpoints with "
                           "transformers' save_pretrained(safe_serialization=True))")
    return files


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    state = {}
    for f in _weight_files(path):
        state.update(load_file(str(f)))
    return {k.removeprefix("model."): v for k, v in state.items()}


def load_model(path: Path, hf_config, device: str, dtype: torch.dtype) -> Transformer:
    cfg = ModelConfig.from_hf(hf_config)
    with torch.device("meta"):
        model = Transformer(cfg)
    hf = _read_state_dict(path)
    ours = {}
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        for kind in (("weight", "bias") if cfg.qkv_bias else ("weight",)):
            ours[p + f"self_attn.qkv_proj.{kind}"] = torch.cat(
                [hf.pop(p + f"self_attn.{x}_proj.{kind}") for x in "qkv"])
        for kind in (("weight", "bias") if cfg.mlp_bias else ("weight",)):
            ours[p + f"mlp.gate_up_proj.{kind}"] = torch.cat(
                [hf.pop(p + f"mlp.{x}_proj.{kind}") for x in ("gate", "up")])
        for name in ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight",
                     "mlp.down_proj.bias"):
            if p + name in hf:
                ours[p + name] = hf.pop(p + name)
        ours[p + "input_layernorm"] = hf.pop(p + "input_layernorm.weight")
        ours[p + "post_attention_layernorm"] = hf.pop(p + "post_attention_layernorm.weight")
    ours["embed_tokens.weight"] = hf.pop("embed_tokens.weight")
    ours["norm"] = hf.pop("norm.weight")
    if not cfg.tie_word_embeddings:
        ours["lm_head.weight"] = hf.pop("lm_head.weight")
    hf.pop("lm_head.weight", None)
    unused = [k for k in hf if not k.endswith("rotary_emb.inv_freq")]
    if unused:
        raise InvalidInput(f"{path}: unexpected weights {unused[:5]} for model_type {cfg.model_type!r}")
    model.load_state_dict({k: v.to(dtype) for k, v in ours.items()}, assign=True, strict=True)
    model.inv_freq = rope_inv_freq(cfg)  # the buffer was built on the meta device
    return model.to(device).eval()
