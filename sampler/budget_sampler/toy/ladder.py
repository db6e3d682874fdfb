"""The shipped toy model ladder: names, architectures, and where their checkpoints live.

Four Llama-architecture models (transformers ``LlamaForCausalLM``, model_type "llama") trained on
the toy task suite by ``python -m budget_sampler.toy.train``. Each lives in ``weights/<name>/`` in the
Hugging Face layout (config.json, generation_config.json, model.safetensors, tokenizer files), so
``AutoModelForCausalLM.from_pretrained(resolve("toy-s"))`` works, and so does passing the short
name anywhere the project accepts a model path.
"""
from __future__ import annotations

import os
import pathlib
from typing import Optional

__all__ = ["NAMES", "DEFAULT_LADDER", "ARCH", "WEIGHTS_DIR", "resolve", "is_toy_name"]

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"

# smallest -> largest
NAMES = ["toy-xs", "toy-s", "toy-m", "toy-l"]
DEFAULT_LADDER = list(NAMES)

# Architecture of each rung (LlamaConfig keyword arguments; vocab comes from the tokenizer).
ARCH = {
    "toy-xs": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, intermediate_size=176),
    "toy-s": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                  num_key_value_heads=3, intermediate_size=256),
    "toy-m": dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=5,
                  num_key_value_heads=5, intermediate_size=432),
    "toy-l": dict(hidden_size=224, num_hidden_layers=6, num_attention_heads=7,
                  num_key_value_heads=7, intermediate_size=608),
}


def is_toy_name(name) -> bool:
    return isinstance(name, str) and name in ARCH


def resolve(name) -> Optional[pathlib.Path]:
    """Directory of the shipped checkpoint for a toy name (e.g. "toy-s"), else None.

    ``BUDGET_SAMPLER_TOY_WEIGHTS`` overrides the weights folder (e.g. to use a retrained ladder).
    A toy name whose weights are missing raises FileNotFoundError naming the folder.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not is_toy_name(name):
        return None
    root = pathlib.Path(os.environ.get("BUDGET_SAMPLER_TOY_WEIGHTS") or WEIGHTS_DIR)
    path = root / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"toy model {name!r} has no checkpoint at {path}: "
            f"retrain with `python -m budget_sampler.toy.train --out {root}`")
    return path
