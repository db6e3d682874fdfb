"""Tiny random Hugging Face checkpoints written with save_pretrained, for offline tests."""
from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    \"\"\"Return True if n is even.\"\"\"\n    return n % 2 == 0\n",
    "for i in range(10):\n    print(i * i)\n",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "héllo wörld — ünïcode ✓ 日本語\n",
] * 4


def make_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def make_config(model_type: str = "llama", vocab_size: int = 300, **overrides):
    from transformers import AutoConfig
    base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                bos_token_id=0, eos_token_id=1, pad_token_id=None)
    base["norm_epsilon" if model_type == "starcoder2" else "rms_norm_eps"] = 1e-5
    if model_type in ("qwen2", "qwen3"):
        base["tie_word_embeddings"] = True
    if model_type in ("qwen3_moe", "mixtral"):  # 8 experts, top-2, each 32 wide (Mixtral: intermediate_size)
        base.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
        if model_type == "mixtral":
            base.update(intermediate_size=32)
            del base["moe_intermediate_size"]
    if model_type in ("qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text"):
        base["head_dim"] = 16  # their configs' defaults (128, 256) do not follow hidden_size / heads
    base.update(overrides)
    return AutoConfig.for_model(model_type, **base)


CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


def make_checkpoint(path: Path, model_type: str = "llama", seed: int = 0, chat_template: str = None,
                    **overrides) -> Path:
    """Random weights (scaled up so logits are far from uniform) + tokenizer, saved under `path`."""
    config = make_config(model_type, **overrides)
    save_random_model(path, config, seed)
    tokenizer = make_tokenizer(config.vocab_size)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)
    return Path(path)


def save_random_model(path: Path, config, seed: int) -> None:
    """A model of `config` with random weights scaled up so logits are far from uniform."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
            else:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
