"""Our decoder against Hugging Face transformers on tiny random checkpoints (float32).

Tolerance: logits and log-probs within 1e-4 absolute (both compute in float32; differences are
summation order only); greedy generation token-for-token equal. The families past Llama's block run
with their distinguishing features switched on: sliding windows shorter than prompt + completion
(the windows cut into the shared prefix), soft-capped scores and logits, partial rotary, LongRoPE,
Gemma 3's two RoPE bases, non-default Granite multipliers.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM

from budget_sampler import Sampler, SamplingParams

from checkpoints import make_checkpoint

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
CASES = {
    "llama": ("llama", {}),
    "llama-llama3-rope": ("llama", {"rope_scaling": LLAMA3_ROPE}),
    "llama-linear-rope-mha": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0},
                                        "num_key_value_heads": 4}),
    "qwen2-bias-tied": ("qwen2", {}),
    "mistral-gqa4": ("mistral", {"num_key_value_heads": 1}),
    "qwen3-qk-norm-tied": ("qwen3", {}),
    "qwen3-bias-untied": ("qwen3", {"attention_bias": True, "tie_word_embeddings": False}),
    "starcoder2-layernorm-gelu-bias": ("starcoder2", {}),
    "gemma-geglu-scaled-embedding": ("gemma", {}),
    "gemma-mqa-head-dim-32": ("gemma", {"num_key_value_heads": 1, "head_dim": 32}),
    # routed experts: top-2 of 8; layer 1 a dense MLP between two MoE layers
    "qwen3-moe-dense-layer": ("qwen3_moe", {"num_hidden_layers": 3, "mlp_only_layers": [1], "norm_topk_prob": True}),
    "mixtral": ("mixtral", {}),
    # alternating windows of 6 (prompt 10 + 24 new tokens), scores and logits capped low enough to bind
    "gemma2-window-softcap": ("gemma2", {"num_hidden_layers": 3, "sliding_window": 6, "query_pre_attn_scalar": 24,
                                         "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}),
    "gemma3-window-two-ropes-qk-norm": ("gemma3_text", {
        "num_hidden_layers": 3, "sliding_window": 6, "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 24,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}}}),
    "phi3-partial-rotary-window": ("phi3", {"partial_rotary_factor": 0.5, "sliding_window": 6}),
    # context 512 over an original 128: cos/sin scaled by sqrt(1 + ln 4 / ln 128), short factors
    "phi3-longrope": ("phi3", {"max_position_embeddings": 512, "original_max_position_embeddings": 128,
                               "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0,
                                                   "original_max_position_embeddings": 128,
                                                   "short_factor": [1.0, 1.3, 1.7, 2.0, 2.5, 3.0, 4.0, 6.0],
                                                   "long_factor": [2.0] * 8}}),
    "granite-multipliers": ("granite", {"embedding_multiplier": 3.0, "residual_multiplier": 0.5,
                                        "attention_multiplier": 0.1, "logits_scaling": 2.0}),
    "olmo2-post-norms-proj-qk-norm": ("olmo2", {}),
}
# the families with the features this module checks beyond Llama's block (their seeded samples too)
FEATURE_CASES = [name for name in CASES if name.startswith(("gemma2", "gemma3", "phi3", "granite", "olmo2"))]
PROMPTS = ["d", "def add(a, b):\n    return", "class Stack:\n    def push(self, x):\n" * 3]


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    model_type, overrides = CASES[request.param]
    path = make_checkpoint(tmp_path_factory.mktemp(request.param), model_type,
                           seed=len(request.param), **overrides)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return hf, Sampler.from_pretrained(str(path), max_batch_size=4)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prefill_and_teacher_forced_logprobs_match_hf(pair, prompt):
    """Prefill logits, then every later position through the shared-prefix suffix path (score)."""
    hf, ours = pair
    ids = ours.encode(prompt)
    cut = max(1, len(ids) // 3)
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), dim=-1)
    want = ref[cut - 1:-1].gather(1, torch.tensor(ids[cut:]).unsqueeze(1)).squeeze(1)
    if len(ids) > cut:
        got = torch.tensor(ours.score_ids(ids[:cut], [ids[cut:]])[0], dtype=torch.float64)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_greedy_equals_hf_generate(pair):
    hf, ours = pair
    prompt = PROMPTS[1]
    ids = ours.encode(prompt)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          do_sample=False, max_new_tokens=24, min_new_tokens=24, pad_token_id=0)
    want = ref[0, len(ids):].tolist()
    out = ours.generate([prompt], SamplingParams(n=3, temperature=0, max_new_tokens=24, ignore_eos=True))[0]
    assert [c.token_ids for c in out] == [want] * 3
    assert all(c.finish_reason == "length" for c in out)


def test_decode_step_logprobs_match_hf_logits(pair):
    """Sampled tokens' log-probs, computed step by step in the decode path, equal HF's forward."""
    hf, ours = pair
    ids = ours.encode(PROMPTS[1])
    out = ours.generate([PROMPTS[1]], SamplingParams(n=5, temperature=1.0, max_new_tokens=12, ignore_eos=True,
                                                     seed=3))[0]
    for c in out:
        with torch.no_grad():
            logits = hf(torch.tensor([ids + c.token_ids])).logits[0].double()
        ref = torch.log_softmax(logits, dim=-1)[len(ids) - 1:-1].gather(
            1, torch.tensor(c.token_ids).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(torch.tensor(c.token_logprobs, dtype=torch.float64), ref, atol=1e-4, rtol=0)
        assert c.logprob == pytest.approx(float(ref.sum()), abs=1e-3)


def test_seeded_samples_reproduce(pair, request):
    """n = 8 seeded samples: the same seed draws the same samples and log-probs (the older families'
    seeding is checked in test_engine)."""
    if request.node.callspec.params["pair"] not in FEATURE_CASES:
        pytest.skip("checked for the families with window / soft-cap / partial rotary / multiplier features")
    _, ours = pair
    params = SamplingParams(n=8, temperature=1.0, top_p=0.9, max_new_tokens=6, ignore_eos=True, seed=11)
    first, again = (ours.generate([PROMPTS[1]], params)[0] for _ in range(2))
    assert [(c.token_ids, c.logprob) for c in first] == [(c.token_ids, c.logprob) for c in again]
    assert len({tuple(c.token_ids) for c in first}) > 1  # eight draws, not one sample copied


def test_sharded_checkpoint_and_half_precision(tmp_path):
    """Sharded safetensors with an index load to the same weights; bf16/fp16 stay close to fp32
    (tolerance 0.1 on log-probs of a 2-layer model: half precision rounds at ~3 significant digits)."""
    from transformers import AutoModelForCausalLM
    path = make_checkpoint(tmp_path / "one", "llama", seed=5)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    ours = Sampler.from_pretrained(str(path)).tokenizer
    ours.save_pretrained(tmp_path / "sharded")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    full = Sampler.from_pretrained(str(path))
    ids = full.encode(PROMPTS[1])
    want = torch.tensor(full.score_ids(ids[:3], [ids[3:]])[0])
    got = Sampler.from_pretrained(str(tmp_path / "sharded")).score_ids(ids[:3], [ids[3:]])[0]
    assert torch.equal(torch.tensor(got), want)
    for dtype in ("bfloat16", "float16"):
        half = Sampler.from_pretrained(str(path), dtype=dtype)
        assert half.model.embed_tokens.weight.dtype == getattr(torch, dtype)
        got = torch.tensor(half.score_ids(ids[:3], [ids[3:]])[0])
        torch.testing.assert_close(got, want, atol=0.1, rtol=0.05)
        out = half.generate([PROMPTS[1]], SamplingParams(n=2, temperature=0.8, max_new_tokens=6, seed=0))
        assert all(len(c.token_ids) >= 1 for c in out[0])
