"""Find a checkpoint (path, short toy name, or hub id, downloaded if need be) and load it.

Weights stream from safetensors shard by shard: each tensor is read, converted to the target dtype
and copied into its place in the model, already allocated on the target device, so host memory
holds the model (on CPU) plus one tensor, never a second copy of the checkpoint. Hugging Face's
separate q/k/v and gate/up projections land in their row ranges of our fused matrices (Phi-3 ships
them fused already); a mixture of experts' per-expert tensors (Qwen3-MoE's experts.{e}.gate_proj /
up_proj / down_proj, Mixtral's w1 / w3 / w2) land in expert e's slice of the layer's stacked gate/up
and down tensors; a multimodal Gemma 3 checkpoint gives its language model only. With tensor
parallel, each rank builds its part of the model and reads only its part of each tensor (see
budget_sampler/models/sharding.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import InvalidInput
from .llama import ModelConfig, Transformer, check_model_type, rope_buffers
from .sharding import Shard, all_reduce_row_parallel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What a hub download fetches: the config, the tokenizer, the generation config and the weights.
HUB_FILES = ["config.json", "generation_config.json", "tokenizer*", "vocab.*", "merges.txt",
             "special_tokens_map.json", "added_tokens.json", "*.safetensors", "*.safetensors.index.json"]
# StarCoder2 names its (not gated) MLP projections after GPT-2's; Mixtral its experts' gate, down, up w1, w2, w3.
RENAMES = {"mlp.c_fc.": "mlp.up_proj.", "mlp.c_proj.": "mlp.down_proj.", "block_sparse_moe.": "mlp.",
           ".w1.": ".gate_proj.", ".w2.": ".down_proj.", ".w3.": ".up_proj."}
# Where a checkpoint keeps its decoder: a text model's `model.`, a multimodal Gemma 3's language model
# (transformers 5 saves `model.language_model.`, the hub's files say `language_model.model.`).
DECODER_PREFIXES = ("model.language_model.", "language_model.model.", "language_model.", "model.")
# A multimodal checkpoint's other towers, not loaded.
OTHER_TOWERS = ("vision_tower.", "multi_modal_projector.")


def resolve_model_path(name_or_path: str, revision: Optional[str] = None, files: Sequence[str] = HUB_FILES) -> Path:
    """A directory holding config.json: a local path, a shipped toy model name, or a hub id, whose
    `files` are downloaded (or found in the Hugging Face cache when offline or the hub is unreachable)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"{path} is not a Hugging Face checkpoint: no config.json in it")
        return path
    from ..toy.ladder import resolve as resolve_toy
    try:
        toy = resolve_toy(str(name_or_path))
    except FileNotFoundError as e:  # a toy name whose weights are missing
        raise InvalidInput(f"model {name_or_path!r}: {e}") from None
    if toy is not None:
        return toy
    if str(name_or_path).count("/") == 1 and not str(name_or_path).startswith((".", "/")):
        return download(str(name_or_path), revision, files)
    raise InvalidInput(f"model {name_or_path!r} not found: not a directory, not a toy model name, "
                       "and not a hub id (org/name)")


def download(repo_id: str, revision: Optional[str] = None, files: Sequence[str] = HUB_FILES) -> Path:
    """snapshot_download with its own environment: HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN;
    it shows a progress bar and falls back to the cache when the hub cannot be reached. huggingface_hub
    1.x offline asks the hub before its cache for a commit revision, so the cache is asked once more."""
    from huggingface_hub import snapshot_download
    error = None
    for cache_only in (False, True):
        try:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(files),
                                          local_files_only=cache_only))
        except Exception as e:  # not found, gated, offline with nothing cached: all one user error
            error = error or e
    reason = " ".join(str(error).split()) or type(error).__name__
    raise InvalidInput(f"model {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
                       + f" could not be downloaded or found in the Hugging Face cache: {reason}") from None


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
    check_model_type(model_type)
    return AutoConfig.from_pretrained(path)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def eos_token_ids(path: Path, hf_config, tokenizer) -> set[int]:
    """The ids that end a sample: generation_config.json's, config.json's and the tokenizer's
    eos_token_id together (each None, an id or a list), since vLLM stops on all of them: a chat
    model's tokenizer names its turn end (<|im_end|>, <end_of_turn>) while generation_config.json
    may list another."""
    from transformers import GenerationConfig
    try:
        generation = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json
        generation = None
    ids: set[int] = set()
    for eos in (generation, getattr(hf_config, "eos_token_id", None), tokenizer.eos_token_id):
        if eos is not None:
            ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids


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


def _fused_rows(cfg: ModelConfig) -> dict[str, tuple[str, int, int]]:
    """HF projection -> (our fused matrix, its first row, end row): q/k/v stacked, then gate/up."""
    q, kv, i = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    rows = {"self_attn.q_proj": ("self_attn.qkv_proj", 0, q),
            "self_attn.k_proj": ("self_attn.qkv_proj", q, q + kv),
            "self_attn.v_proj": ("self_attn.qkv_proj", q + kv, q + 2 * kv)}
    if cfg.gated_mlp:
        rows |= {"mlp.gate_proj": ("mlp.gate_up_proj", 0, i), "mlp.up_proj": ("mlp.gate_up_proj", i, 2 * i)}
    return rows


def _part_rows(cfg: ModelConfig) -> dict[str, list[int]]:
    """Our fused matrix -> the rows of each of its parts (for tensor-parallel reads of checkpoints
    that ship them fused, like Phi-3)."""
    q, kv, i = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    return {"self_attn.qkv_proj": [q, kv, kv], "mlp.gate_up_proj": [i, i]}


def _hf_name(key: str) -> str:
    """A checkpoint key in the Hugging Face decoder's terms (layers.0.self_attn.q_proj.weight)."""
    name = next((key.removeprefix(p) for p in DECODER_PREFIXES if key.startswith(p)), key)
    for old, new in RENAMES.items():
        name = name.replace(old, new)
    return name


def _expert_destination(parts: list[str], cfg: ModelConfig) -> tuple[str, tuple]:
    """layers.1.mlp.experts.3.gate_proj -> (layers.1.mlp.gate_up_proj, expert 3's gate rows)."""
    *mlp, _, expert, proj = parts
    i = cfg.moe_intermediate_size
    if proj == "down_proj":
        return ".".join([*mlp, "down_proj"]), (int(expert),)
    return ".".join([*mlp, "gate_up_proj"]), (int(expert), slice(0, i) if proj == "gate_proj" else slice(i, 2 * i))


def _destination(name: str, cfg: ModelConfig, fused: dict) -> Optional[tuple[str, Optional[tuple]]]:
    """Where a checkpoint tensor goes: (our parameter, its index or None for all of it); None to skip."""
    if (name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.tie_word_embeddings)
            or name.startswith(OTHER_TOWERS)):
        return None
    module, _, kind = name.rpartition(".")  # layers.0.self_attn.q_proj, weight
    parts = module.split(".")
    if len(parts) > 2 and parts[-3] == "experts" and parts[-1] in ("gate_proj", "up_proj", "down_proj"):
        return _expert_destination(parts, cfg)
    owner = ".".join(parts[-2:])
    if owner not in fused:
        return name, None
    target, start, end = fused[owner]
    return ".".join([*parts[:-2], target, kind]), (slice(start, end),)


def load_model(path: Path, hf_config, device: str, dtype: torch.dtype, shard: Shard = Shard()) -> Transformer:
    """The model, or with a tensor-parallel `shard` this rank's part of it, whose row-parallel
    outputs are summed over the ranks (the default process group)."""
    from safetensors import safe_open
    cfg = shard.config(ModelConfig.from_hf(hf_config))
    with torch.device("meta"):
        model = Transformer(cfg).to(dtype)
    model.to_empty(device=device)  # uninitialised storage in the target dtype, on the device
    params = dict(model.named_parameters())
    fused, parts = _fused_rows(cfg), _part_rows(cfg)
    filled = dict.fromkeys(params, 0)  # elements written per parameter
    # on CUDA safetensors reads straight into device memory; on CPU it copies a tensor out of the mmap
    read_device = "cpu" if torch.device(device).type == "cpu" else str(device)
    for file in _weight_files(path):
        with safe_open(str(file), framework="pt", device=read_device) as f:
            for key in f.keys():
                hf_name = _hf_name(key)
                dest = _destination(hf_name, cfg, fused)
                if dest is None:
                    continue
                name, index = dest
                if name not in params:
                    raise InvalidInput(f"{path}: unexpected weight {key!r} for model_type {cfg.model_type!r}")
                target = params[name].data if index is None else params[name].data[index]
                tensor = shard.read(f, key, hf_name, parts.get(".".join(hf_name.split(".")[-3:-1])))
                if tensor.shape != target.shape:
                    raise InvalidInput(f"{path}: weight {key!r} has shape {tuple(tensor.shape)}; "
                                       f"the config implies {tuple(target.shape)}")
                target.copy_(tensor)  # casts to the model's dtype
                filled[name] += target.numel()
                del tensor
    missing = [name for name, p in params.items() if filled[name] != p.numel()]
    if missing:
        raise InvalidInput(f"{path}: weights missing for model_type {cfg.model_type!r}: {missing[:5]}")
    for name, inv_freq in rope_buffers(cfg).items():
        setattr(model, name, inv_freq.to(device))  # float32, as Hugging Face keeps them
    if shard.world_size > 1:
        all_reduce_row_parallel(model)
    return model.eval()
