"""On a CUDA device (skipped elsewhere; run with TRITON_INTERPRET=0 so the kernels compile): the
decode step replayed from CUDA graphs gives exactly the eager step's samples, under refill and
preemption too; greedy decoding matches transformers' `generate`; seeded samples match the CPU
engine's (the sampling kernel draws the reference's uniforms).
"""
import pytest
import torch

from budget_sampler import Sampler, SamplingParams
from budget_sampler.memory import kv_bytes_per_token

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["def add(a, b):\n    return", "for i in range(10):\n", "x"]
# n above max_batch_size: slots refill, and batches take many padded sizes as samples end early
PARAMS = SamplingParams(n=48, temperature=1.0, top_p=0.95, max_new_tokens=40, stop=["10", "Tr", "St"], seed=5)


def tokens(results):
    return [[(c.index, c.token_ids, c.finish_reason) for c in per] for per in results]


def assert_same(got, want, atol):
    assert tokens(got) == tokens(want)
    for per_got, per_want in zip(got, want):
        for a, b in zip(per_got, per_want):
            torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs),
                                       atol=atol, rtol=0)


@pytest.fixture(scope="module")
def eager(tiny_llama):
    s = Sampler.from_pretrained(str(tiny_llama), device="cuda", dtype=torch.float32, max_batch_size=32,
                                cuda_graphs=False)
    return s.generate(PROMPTS, PARAMS)


def test_graphs_replay_the_eager_step(tiny_llama, eager):
    s = Sampler.from_pretrained(str(tiny_llama), device="cuda", dtype=torch.float32, max_batch_size=32,
                                cuda_graphs=True)
    assert s.engine.runner.graphs
    assert_same(s.generate(PROMPTS, PARAMS), eager, atol=1e-5)
    assert s.engine.pool.num_used == 0


def test_graphs_under_preemption(tiny_llama, eager):
    from budget_sampler.models import load_hf_config
    from budget_sampler.models.llama import ModelConfig
    cfg = ModelConfig.from_hf(load_hf_config(tiny_llama))
    s = Sampler.from_pretrained(str(tiny_llama), device="cuda", dtype=torch.float32, max_batch_size=32,
                                cuda_graphs=True, kv_cache_memory=400 * kv_bytes_per_token(cfg, torch.float32))
    # readmitted samples' KV is recomputed by a teacher-forced pass: float32 rounding differs
    assert_same(s.generate(PROMPTS, PARAMS), eager, atol=1e-4)
    assert s.stats.preemptions > 0


def test_seeded_samples_match_the_cpu_engine(tiny_llama, eager):
    cpu = Sampler.from_pretrained(str(tiny_llama), max_batch_size=32).generate(PROMPTS, PARAMS)
    assert_same(eager, cpu, atol=1e-4)


def test_greedy_matches_transformers_generate(tiny_llama):
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).cuda().eval()
    ours = Sampler.from_pretrained(str(tiny_llama), device="cuda", dtype=torch.float32, max_batch_size=4)
    got = ours.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_new_tokens=24, ignore_eos=True))
    for prompt, per in zip(PROMPTS, got):
        ids = torch.tensor([ours.encode(prompt)], device="cuda")
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24,
                           min_new_tokens=24, pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert [c.token_ids for c in per] == [want, want]
