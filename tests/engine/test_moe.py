"""Mixture-of-experts specifics beside test_model.py's comparisons with transformers: which layers are
routed, seeded samples reproducing, experts' tensors split across shards, and bad configs."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from budget_sampler import Sampler, SamplingParams
from budget_sampler.errors import InvalidInput
from budget_sampler.models import ModelConfig, load_model

from checkpoints import make_checkpoint, make_config

PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def qwen3_moe(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("qwen3-moe"), "qwen3_moe", seed=7, num_hidden_layers=3,
                           mlp_only_layers=[1])


@pytest.mark.parametrize("overrides, layers", [
    ({}, (0, 1, 2, 3)),
    ({"mlp_only_layers": [0, 2]}, (1, 3)),
    ({"decoder_sparse_step": 2}, (1, 3)),
    ({"decoder_sparse_step": 2, "mlp_only_layers": [3]}, (1,)),
])
def test_qwen3_moe_routed_layers_follow_transformers(overrides, layers):
    cfg = ModelConfig.from_hf(make_config("qwen3_moe", num_hidden_layers=4, **overrides))
    assert cfg.moe_layers == layers and cfg.qk_norm and not cfg.norm_topk_prob
    mixtral = ModelConfig.from_hf(make_config("mixtral"))
    assert mixtral.moe_layers == (0, 1) and mixtral.norm_topk_prob and mixtral.moe_intermediate_size == 32


@pytest.mark.parametrize("overrides, message", [
    ({"num_experts_per_tok": 9}, r"num_experts_per_tok=9 .* between 1 and num_experts \(8\)"),
    ({"hidden_act": "gelu"}, r"hidden_act 'gelu' is not supported for routed experts; supported: silu"),
])
def test_configs_the_experts_cannot_run_are_invalid_input(overrides, message):
    with pytest.raises(InvalidInput, match=message):
        ModelConfig.from_hf(make_config("qwen3_moe", **overrides))


def test_seeded_samples_reproduce(qwen3_moe):
    sampler = Sampler.from_pretrained(str(qwen3_moe), max_batch_size=8)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=8, ignore_eos=True, seed=11)
    first, again = (sampler.generate([PROMPT], params)[0] for _ in range(2))
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({tuple(c.token_ids) for c in first}) > 1  # the samples differ from one another


def test_experts_split_across_shards_stack_into_the_same_model(tmp_path, qwen3_moe):
    """Shards of 8 KB split a layer's experts over several files; the stacked tensors come out equal."""
    hf = AutoModelForCausalLM.from_pretrained(qwen3_moe, dtype=torch.float32)
    hf.save_pretrained(tmp_path, max_shard_size="8KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 3
    whole = Sampler.from_pretrained(str(qwen3_moe)).model.state_dict()
    sharded = load_model(tmp_path, hf.config, "cpu", torch.float32).state_dict()
    assert whole.keys() == sharded.keys() and all(torch.equal(whole[k], sharded[k]) for k in whole)
    gate_up = whole["layers.0.mlp.gate_up_proj"]
    expert3 = hf.model.layers[0].mlp.experts.gate_up_proj[3]  # transformers 5's fused [2I, H]: gate rows, up rows
    assert torch.equal(gate_up[3], expert3)
