"""The eflops budget: a sample's bytes from plan's decode-step formula, against a hand computation."""
import pytest
import torch
from transformers import LlamaConfig

from budget_sampler.errors import InvalidInput
from budget_sampler.eval.cost import check_gpu, config_from_dict, intensity, mean_sample_bytes


def test_sample_bytes_by_hand():
    h, f, layers, vocab, heads, kv_heads = 64, 160, 3, 500, 4, 2
    config = LlamaConfig(hidden_size=h, intermediate_size=f, num_hidden_layers=layers, vocab_size=vocab,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=False)
    head_dim, size = h // heads, 2  # bfloat16
    # matmul weights: q, o (h x h), k, v (h x kv_heads * head_dim), gate, up, down (h x f) per layer, the
    # norms, the final norm and the LM head (the input embedding does no matmul)
    weights = (layers * (2 * h * h + 2 * h * kv_heads * head_dim + 3 * h * f + 2 * h) + h + vocab * h) * size
    kv_per_token = 2 * layers * kv_heads * head_dim * size
    batch, prompts = 8, 2

    def by_hand(prompt_tokens, new_tokens):  # steps s = 1..m: weights once, both prompts' KV once, every
        return sum(weights + kv_per_token * (prompts * prompt_tokens + batch * s)  # sample's suffix of s,
                   + 2 * batch * vocab * size for s in range(1, new_tokens + 1)) / batch  # logits out and in
    samples = [(30, 5), (12, 40), (30, 0)]
    expected = sum(by_hand(p, m) for p, m in samples) / len(samples)
    assert mean_sample_bytes(config, torch.bfloat16, batch, prompts, samples) == pytest.approx(expected)
    assert mean_sample_bytes(config_from_dict(config.to_dict()), torch.bfloat16, batch, prompts,
                             samples) == pytest.approx(expected)
    assert mean_sample_bytes(config, torch.bfloat16, batch, prompts, [(30, 0)]) == 0.0


def test_intensity_is_peak_over_bandwidth():
    assert intensity("h100-sxm", torch.bfloat16) == pytest.approx(989e12 / 3.35e12)
    assert intensity("h200", torch.float32) == pytest.approx(67e12 / 4.8e12)
    with pytest.raises(InvalidInput, match="--gpu 'b200' is invalid: choose one of h100-sxm"):
        check_gpu("b200")
