"""The lm-evaluation-harness LM: repeated requests become one n-sample call; answers keep their order.

lm-eval itself is an optional extra and is not needed here: requests are plain objects with `.args`,
as lm-eval's Instance has.
"""
import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from budget_sampler import Completion, InvalidInput, Sampler, SamplingParams
from budget_sampler.integrations.lm_eval_model import BudgetSamplerLM, group_identical, main


@dataclass
class Request:
    args: tuple


class FakeSampler:
    """generate() records each call and names every sample after its prompt, seed and index."""

    max_context = 1024

    def __init__(self):
        self.calls = []

    def encode(self, prompt):
        return list(prompt.encode())

    def generate(self, prompts, params, progress=False):
        self.calls.append((list(prompts), params))
        return [[Completion(i, f"{p}#{params.seed}#{i}", [], 0.0, "length") for i in range(params.n)]
                for p in prompts]


SAMPLE = {"until": ["\n\n"], "do_sample": True, "temperature": 0.8, "max_gen_toks": 32}
SAMPLE_SEEDED = {**SAMPLE, "seed": 7}
GREEDY = {"until": "\n", "do_sample": False}


def lm_with_fake():
    sampler = FakeSampler()
    return BudgetSamplerLM(sampler=sampler, seed=None), sampler


def test_repeated_requests_become_one_call_with_n():
    lm, sampler = lm_with_fake()
    requests = [Request(("A", SAMPLE))] * 5
    assert lm.generate_until(requests, disable_tqdm=True) == [f"A#None#{i}" for i in range(5)]
    [(prompts, params)] = sampler.calls
    assert prompts == ["A"] and params.n == 5
    assert (params.temperature, params.stop, params.max_new_tokens) == (0.8, ["\n\n"], 32)


def test_grouping_keeps_the_original_order_and_batches_equal_settings():
    lm, sampler = lm_with_fake()
    order = ["A", "B", "A", "C", "B", "A", "C", "B", "A", "A"]  # A x5, B x3, C x2, interleaved
    requests = [Request((ctx, dict(SAMPLE) if ctx != "C" else SAMPLE_SEEDED)) for ctx in order]
    requests += [Request(("D", dict(SAMPLE)))] * 3  # same settings and group size as B
    out = lm.generate_until(requests, disable_tqdm=True)
    seen = {}
    for ctx, text in zip(order + ["D"] * 3, out):
        index = seen.setdefault(ctx, 0)
        seen[ctx] += 1
        assert text == f"{ctx}#{7 if ctx == 'C' else None}#{index}"
    calls = sorted((prompts, params.n, params.seed) for prompts, params in sampler.calls)
    assert calls == [(["A"], 5, None), (["B", "D"], 3, None), (["C"], 2, 7)]


def test_greedy_groups_decode_once_and_share_the_answer():
    lm, sampler = lm_with_fake()
    out = lm.generate_until([Request(("A", GREEDY))] * 4 + [Request(("B", {}))] * 2, disable_tqdm=True)
    assert out == ["A#None#0"] * 4 + ["B#None#0"] * 2
    for _, params in sampler.calls:
        assert params.n == 1 and params.temperature == 0.0
    assert sampler.calls[0][1].stop == ["\n"]


def test_gen_kwargs_are_checked():
    lm, _ = lm_with_fake()
    with pytest.raises(InvalidInput, match="repetition_penalty"):
        lm.generate_until([Request(("A", {"repetition_penalty": 1.1}))])
    with pytest.raises(InvalidInput, match="gen_kwargs must be a dict"):
        group_identical([Request(("A", "until=x"))])
    with pytest.raises(InvalidInput, match="temperature"):
        lm.generate_until([Request(("A", {"do_sample": True, "temperature": -1.0}))])


def test_construction_without_the_harness():
    with pytest.raises(InvalidInput, match="exactly one"):
        BudgetSamplerLM()
    with pytest.raises(InvalidInput, match="exactly one"):
        BudgetSamplerLM("path", sampler=FakeSampler())
    if importlib.util.find_spec("lm_eval") is None:
        assert BudgetSamplerLM.__mro__[1] is object
        assert main([]) == 2


# ---------------------------------------------------------------- real tiny checkpoint


@pytest.fixture(scope="module")
def real(tiny_llama):
    sampler = Sampler.from_pretrained(str(tiny_llama), max_batch_size=16)
    return sampler, BudgetSamplerLM(sampler=sampler)


CONTEXT = "def add(a, b):\n    return"


def test_real_generate_until_matches_one_n_sample_generate(real):
    sampler, lm = real
    kwargs = {"until": ["\n"], "do_sample": True, "temperature": 1.0, "max_gen_toks": 8, "seed": 3}
    out = lm.generate_until([Request((CONTEXT, kwargs))] * 3, disable_tqdm=True)
    expected = sampler.generate([CONTEXT], SamplingParams(n=3, temperature=1.0, max_new_tokens=8,
                                                          stop=["\n"], seed=3))[0]
    assert out == [c.text for c in expected]


def test_real_context_overflow_names_the_flag_to_lower(real):
    sampler, lm = real
    used = len(sampler.encode(CONTEXT))
    with pytest.raises(InvalidInput, match=f"--gen_kwargs max_gen_toks={sampler.max_context - used}"):
        lm.generate_until([Request((CONTEXT, {"max_gen_toks": 1024}))], disable_tqdm=True)


def test_real_loglikelihood(real):
    sampler, lm = real
    greedy = sampler.generate([CONTEXT], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))[0][0]

    def round_trips(ids):  # random weights emit byte pieces that do not re-tokenize to themselves
        return sampler.tokenizer(sampler.tokenizer.decode(ids), add_special_tokens=False).input_ids == ids

    k = max(k for k in range(1, 5) if round_trips(greedy.token_ids[:k]))
    greedy_text = sampler.tokenizer.decode(greedy.token_ids[:k])
    other = " x + 1"
    results = lm.loglikelihood([Request((CONTEXT, greedy_text)), Request((CONTEXT, other)),
                                Request((CONTEXT + " ", "a"))])
    scored = sampler.score(CONTEXT, [greedy_text, other, " a"])  # trailing space moves to the continuation
    assert [ll for ll, _ in results] == pytest.approx([sum(s) for s in scored], abs=1e-4)
    assert [is_greedy for _, is_greedy in results] == [
        True, False, sampler.tokenizer(" a", add_special_tokens=False).input_ids == greedy.token_ids[:1]]


def test_real_loglikelihood_rolling_matches_transformers(real, tiny_llama):
    from transformers import AutoModelForCausalLM

    sampler, lm = real
    text = "for i in range(10):\n    print(i * i)\n"
    [ours] = lm.loglikelihood_rolling([Request((text,))])
    ids = [sampler.tokenizer.bos_token_id] + sampler.tokenizer(text, add_special_tokens=False).input_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    reference = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert ours == pytest.approx(reference, abs=1e-3)


class CharTokenizer:
    bos_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=True):
        return SimpleNamespace(input_ids=[ord(c) for c in text])


def test_rolling_windows_predict_each_token_once_with_the_most_context():
    class WindowRecorder:
        tokenizer = CharTokenizer()
        max_context = 5
        calls = []

        def score_ids(self, prompt_ids, completions):
            assert len(prompt_ids) >= 1 and len(prompt_ids) + len(completions[0]) <= 5
            self.calls.append((prompt_ids, completions[0]))
            return [[-1.0] * len(completions[0])]

    recorder = WindowRecorder()
    [total] = BudgetSamplerLM(sampler=recorder).loglikelihood_rolling([Request(("abcdefghij",))])
    tokens = [0] + [ord(c) for c in "abcdefghij"]
    predicted = [t for _, completion in recorder.calls for t in completion]
    assert predicted == tokens[1:] and total == -10.0
    for prompt, completion in recorder.calls:  # each window's prompt is the text right before it
        start = tokens.index(completion[0])
        assert prompt == tokens[start - len(prompt):start]
        assert len(prompt) + len(completion) == 5 or prompt == [0]
