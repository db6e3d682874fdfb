"""FLOPs per sample from a config, and how many samples a budget buys."""
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    Starcoder2Config,
)

from budget_sampler.errors import InvalidInput
from budget_sampler.eval.budget import (
    PAPER_TOKENS,
    CostModel,
    ModelShape,
    budget_grid,
    flops_per_sample,
    sample_counts,
)

TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2)
CONFIGS = {
    "llama-mha": LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=4),
    "llama-gqa": LlamaConfig(**TINY, num_attention_heads=8, num_key_value_heads=2),
    "llama-mqa-tied-bias": LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=1,
                                       tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    "llama-head-dim": LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=2, head_dim=24),
    "qwen2-tied": Qwen2Config(**TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mistral": MistralConfig(**TINY, num_attention_heads=4, num_key_value_heads=2),
    "qwen3-qk-norm": Qwen3Config(**TINY, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "starcoder2-bias": Starcoder2Config(**TINY, num_attention_heads=4, num_key_value_heads=2),
    "gemma": GemmaConfig(**TINY, num_attention_heads=4, num_key_value_heads=1, head_dim=32),
    # realistic shapes, instantiated on the meta device (no memory)
    "codellama-7b": LlamaConfig(vocab_size=32016, hidden_size=4096, intermediate_size=11008,
                                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "llama-70b-gqa": LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                                 num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
}


def counted(config):
    """(unique parameters, parameters minus the input embedding, the output head counted even if tied)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    unique = sum(p.numel() for p in model.parameters())
    matmul = sum(p.numel() for name, p in model.named_parameters(remove_duplicate=False)
                 if "embed_tokens" not in name)
    return unique, matmul


@pytest.mark.parametrize("name", CONFIGS)
def test_paper_flops_match_parameters_of_an_instantiated_model(name):
    config = CONFIGS[name]
    unique, matmul = counted(config)
    shape = ModelShape.from_config(config)
    assert (shape.parameters, shape.matmul_parameters) == (unique, matmul)
    assert flops_per_sample(config) == flops_per_sample(config, mode="paper") == 2 * matmul * PAPER_TOKENS


def test_codellama_7b_is_about_1_7_teraflops_per_sample():
    assert flops_per_sample(CONFIGS["codellama-7b"]) == pytest.approx(1.69e12, rel=0.01)


def test_exact_flops_by_hand():
    shape = ModelShape(parameters=0, matmul_parameters=10, num_layers=2, attention_width=3)
    # prefill of 2 tokens: token t costs 2*10 + 4*2*3*t  ->  44 + 68
    assert shape.prefill_flops(2) == 112
    # 2 new tokens after a 2-token prompt see contexts of 3 and 4: 92 + 116
    assert shape.decode_flops(2, 2) == 208
    assert shape.sample_flops(2, 2, samples_per_prompt=4) == 112 / 4 + 208
    assert shape.sample_flops(2, 2) == 112 + 208  # no prefix sharing


def test_flops_per_sample_modes():
    config = CONFIGS["llama-gqa"]
    shape = ModelShape.from_config(config)
    assert flops_per_sample(config, "exact", prompt_tokens=50, new_tokens=20, samples_per_prompt=8) == \
        shape.prefill_flops(50) / 8 + shape.decode_flops(50, 20)
    with pytest.raises(InvalidInput, match="'bogus'"):
        flops_per_sample(config, "bogus")


def test_unsupported_model_type_is_invalid_input():
    from transformers import GPT2Config
    with pytest.raises(InvalidInput, match="gpt2"):
        ModelShape.from_config(GPT2Config())


@pytest.mark.parametrize("cost, budget, n, k", [
    (CostModel(0, 3), 10, 100, 3),       # 9 fits, 12 does not
    (CostModel(0, 2.5), 10, 100, 4),     # fits exactly
    (CostModel(0, 1), 1000, 8, 8),       # never more than the samples drawn
    (CostModel(5, 1), 4, 10, 0),         # the shared prefill alone exceeds the budget
    (CostModel(5, 1), 7, 10, 2),
    (CostModel(0, 0.1), 0.3, 10, 3),     # 0.1 * 3 > 0.3 in floating point: still 3
])
def test_affordable_k_by_hand(cost, budget, n, k):
    assert cost.affordable(budget, n) == k


def test_budget_grid_doubles_from_the_cheapest_sample_until_everyone_draws_all_it_has():
    unit, grid = budget_grid([CostModel(0, 3), CostModel(0, 1)], counts=[4, 4])
    assert unit == 1 and grid == [1, 2, 4, 8, 12]  # the costlier model needs 12 for its 4 samples
    unit, grid = budget_grid([CostModel(0, 3), CostModel(0, 1)], counts=[4, 12])
    assert grid == [1, 2, 4, 8, 12]  # the budget-matched counts: both have drawn all theirs at 12
    unit, grid = budget_grid([CostModel(0, 2), CostModel(0, 1)], counts=[4, 8])
    assert grid == [1, 2, 4, 8]  # the top is on the doubling grid: no extra row
    unit, grid = budget_grid([CostModel(2, 1)], counts=[1])
    assert unit == 3 and grid == [1]
    unit, grid = budget_grid([CostModel(0, 3), CostModel(0, 1)], counts=[4, 20], marked=[0])
    assert grid == [1, 2, 4, 8, 12, 16, 20]  # 12: the costlier model's 4 samples; it is capped from 15 on
    unit, grid = budget_grid([CostModel(0, 3), CostModel(0, 1)], counts=[4, 13], marked=[0])
    assert grid == [1, 2, 4, 8, 12]  # no row between the costlier model's 4 samples (12) and its 5th (15)
    unit, grid = budget_grid([CostModel(0, 3), CostModel(0, 1)], counts=[4, 11], marked=[0])
    assert grid == [1, 2, 4, 8, 12]  # at 12 the cheaper model is capped: it drew 11


def test_sample_counts_give_every_model_what_the_top_budget_buys():
    costs = {"a": 1.0, "b": 4.0, "c": 16.0}
    assert sample_counts(costs, 4) == {"a": 64, "b": 16, "c": 4}
    assert sample_counts(costs, 4, max_n=32) == {"a": 32, "b": 16, "c": 4}
    assert sample_counts({"a": 3.0, "b": 10.0}, 2) == {"a": 6, "b": 2}  # floor(2 x 10 / 3)
    assert sample_counts({"a": 0.1, "b": 0.3}, 3) == {"a": 9, "b": 3}  # 0.3 / 0.1 < 3 in floating point
