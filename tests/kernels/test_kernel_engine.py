"""The engine on the Triton kernels (interpreted on CPU) produces the same tokens as on the torch
references: greedy exactly, and seeded sampling too (the sampling kernel draws the reference's
uniforms). Two prompts of different lengths make two prefix groups."""
import pytest

import budget_sampler_kernels as kernels
import budget_sampler_kernels.activation
import budget_sampler_kernels.attention
import budget_sampler_kernels.norm
import budget_sampler_kernels.rope
import budget_sampler_kernels.sampling  # noqa: F401 (the submodules patched below)
from budget_sampler import Sampler, SamplingParams

PROMPTS = ["def add(a, b):\n    return", "for i in range(10):"]


@pytest.fixture(scope="module")
def sampler(tiny_llama):
    return Sampler.from_pretrained(str(tiny_llama), max_batch_size=4)


def generate(sampler, backend, params):
    previous = kernels.get_backend()
    kernels.set_backend(backend)
    try:
        return [[c.token_ids for c in per_prompt] for per_prompt in sampler.generate(PROMPTS, params)]
    finally:
        kernels.set_backend(previous)


@pytest.mark.parametrize("params", [
    SamplingParams(n=2, temperature=0, max_new_tokens=8, ignore_eos=True),
    SamplingParams(n=2, temperature=0.9, top_p=0.9, max_new_tokens=6, ignore_eos=True, seed=3),
], ids=["greedy", "sampled"])
def test_triton_path_matches_torch_path(sampler, params, monkeypatch):
    calls = {}
    ops = [(kernels.norm, "rms_norm_triton"), (kernels.rope, "rope_write_kv_triton"),
           (kernels.attention, "shared_prefix_attention_triton"), (kernels.activation, "silu_and_mul_triton"),
           (kernels.sampling, "sample_triton")]
    for module, name in ops:
        def spy(*args, _fn=getattr(module, name), _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            return _fn(*args)
        monkeypatch.setattr(module, name, spy)
    triton_ids = generate(sampler, "triton", params)
    assert len(calls) == len(ops), calls  # every op ran on its kernel
    assert triton_ids == generate(sampler, "torch", params)
