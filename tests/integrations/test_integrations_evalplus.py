"""The evalplus decoder asks the engine for ONE prompt with n = num_samples."""
import pytest

from budget_sampler import Completion, InvalidInput, Sampler, SamplingParams
from budget_sampler.integrations.evalplus_decoder import STOP, SamplerDecoder


class FakeSampler:
    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, progress=False):
        self.calls.append((list(prompts), params))
        return [[Completion(i, f"{p}#{i}", [], 0.0, "stop") for i in range(params.n)] for p in prompts]


def test_codegen_is_one_request_with_n_samples():
    sampler = FakeSampler()
    decoder = SamplerDecoder(sampler, "m", temperature=0.6, top_p=0.9, max_new_tokens=99, seed=4)
    assert decoder.codegen("P", do_sample=True, num_samples=7) == [f"P#{i}" for i in range(7)]
    [(prompts, params)] = sampler.calls
    assert prompts == ["P"]
    assert (params.n, params.temperature, params.top_p, params.max_new_tokens, params.seed) == (7, 0.6, 0.9, 99, 4)
    assert params.stop == STOP["humaneval"]
    assert decoder.is_direct_completion() and str(decoder) == "m"


def test_greedy_decodes_once():
    sampler = FakeSampler()
    decoder = SamplerDecoder(sampler, "m")
    assert decoder.codegen("P", do_sample=False, num_samples=3) == ["P#0"] * 3
    [(_, params)] = sampler.calls
    assert (params.n, params.temperature, params.top_p) == (1, 0.0, 1.0)
    with pytest.raises(InvalidInput, match="temperature > 0"):
        SamplerDecoder(sampler, "m", temperature=0).codegen("P")


def test_real_codegen_matches_generate(tiny_llama):
    sampler = Sampler.from_pretrained(str(tiny_llama), max_batch_size=8)
    decoder = SamplerDecoder(sampler, "tiny", temperature=1.0, top_p=1.0, max_new_tokens=6, seed=2)
    expected = sampler.generate(["def f():\n"], SamplingParams(n=5, temperature=1.0, max_new_tokens=6,
                                                               stop=STOP["humaneval"], seed=2))[0]
    assert decoder.codegen("def f():\n", num_samples=5) == [c.text for c in expected]
