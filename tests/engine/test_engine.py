"""Engine behaviour: seeds, refill, several prompts, stop strings, EOS, cancel, memory, bad input."""
import shutil

import pytest
import torch

from budget_sampler import InvalidInput, Sampler, SamplingParams

PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def sampler(tiny_llama):
    return Sampler.from_pretrained(str(tiny_llama), max_batch_size=8)


def ids_of(out):
    return [[c.token_ids for c in per_prompt] for per_prompt in out]


def test_seed_reproduces_and_samples_differ(sampler):
    p = SamplingParams(n=6, temperature=1.0, max_new_tokens=16, ignore_eos=True, seed=7)
    a, b = sampler.generate([PROMPT], p), sampler.generate([PROMPT], p)
    assert ids_of(a) == ids_of(b)
    assert len({tuple(t) for t in ids_of(a)[0]}) == 6
    c = sampler.generate([PROMPT], SamplingParams(n=6, temperature=1.0, max_new_tokens=16, ignore_eos=True, seed=8))
    assert ids_of(c) != ids_of(a)


def test_samples_do_not_depend_on_batch_composition(tiny_llama, sampler):
    """n > max_batch_size forces refill; the counter-based RNG keeps each sample identical."""
    p = SamplingParams(n=20, temperature=0.9, top_p=0.9, max_new_tokens=10, ignore_eos=True, seed=1)
    small = Sampler.from_pretrained(str(tiny_llama), max_batch_size=3)
    together = sampler.generate([PROMPT, "x = 1"], p)
    assert ids_of(small.generate([PROMPT, "x = 1"], p)) == ids_of(together)
    alone = sampler.generate(["x = 1"], p)
    assert ids_of(alone)[0] == ids_of(together)[1]
    assert [c.index for c in together[0]] == list(range(20))


def test_sample_indices_draw_those_samples_of_a_larger_run(sampler):
    """A resumed draw asks only for the missing indices and gets the uninterrupted run's samples."""
    p = SamplingParams(n=7, temperature=1.0, max_new_tokens=12, ignore_eos=True, seed=3)
    full = sampler.generate([PROMPT, "x = 1"], p)
    part = sampler.generate([PROMPT, "x = 1"], SamplingParams(n=3, temperature=1.0, max_new_tokens=12,
                                                              ignore_eos=True, seed=3, sample_indices=[6, 2, 4]))
    for whole, some in zip(full, part):
        assert [c.index for c in some] == [2, 4, 6]
        assert [c.token_ids for c in some] == [whole[i].token_ids for i in (2, 4, 6)]


def test_n_larger_than_slots_with_eos_and_refill(tiny_llama):
    s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=4)
    out = s.generate([PROMPT, "for i in", "class"], SamplingParams(n=37, temperature=1.2, max_new_tokens=9, seed=0))
    assert [len(o) for o in out] == [37, 37, 37]
    for o in out:
        for c in o:
            assert c.finish_reason in ("eos", "length")
            assert len(c.token_ids) == 9 or c.token_ids[-1] == 1
    assert not s.engine.has_unfinished() and s.engine.pool.num_used == 0


def test_stop_string_across_token_boundary(sampler):
    base = sampler.generate([PROMPT], SamplingParams(n=1, temperature=0, max_new_tokens=40, ignore_eos=True))[0][0]
    pieces = [sampler.tokenizer.decode([t]) for t in base.token_ids]
    # a stop that starts inside token 3 and ends inside a later token
    start = sum(len(p) for p in pieces[:3]) - 1
    stop = base.text[start:start + len(pieces[3]) + 2]
    assert len(stop) >= 2 and pieces[2] and stop not in "".join(pieces[:3])
    got = sampler.generate([PROMPT], SamplingParams(n=2, temperature=0, max_new_tokens=40, ignore_eos=True,
                                                    stop=["@@never@@", stop]))[0]
    for c in got:
        assert c.finish_reason == "stop"
        assert c.text == base.text[:base.text.find(stop)]
        assert c.token_ids == base.token_ids[:len(c.token_ids)] and len(c.token_ids) < 40


def test_prompt_kv_memory_does_not_grow_with_n(tiny_llama):
    sizes = []
    for n in (1, 64):
        s = Sampler.from_pretrained(str(tiny_llama), max_batch_size=64)
        s.generate([PROMPT * 4], SamplingParams(n=n, max_new_tokens=4, ignore_eos=True, seed=0))
        sizes.append((s.stats.prefix_kv_bytes, s.stats.kv_blocks_total))
        assert s.stats.prefill_tokens == len(s.encode(PROMPT * 4))
        assert s.stats.generated_tokens == 4 * n and s.stats.tokens_per_second > 0
    assert sizes[0] == sizes[1] and sizes[0][0] > 0


def test_stream_cancel_stops_a_prompt(sampler):
    stream = sampler.stream([PROMPT, "x = 1"], SamplingParams(n=30, max_new_tokens=6, ignore_eos=True, seed=0))
    seen = {0: 0, 1: 0}
    for i, _ in stream:
        seen[i] += 1
        if i == 0 and seen[0] == 1:
            stream.cancel(0)
    assert seen == {0: 1, 1: 30}
    assert not sampler.engine.has_unfinished()


def test_logprob_is_sum_of_token_logprobs(sampler):
    c = sampler.generate([PROMPT], SamplingParams(n=1, temperature=0.7, top_k=5, max_new_tokens=8, seed=2))[0][0]
    assert c.logprob == pytest.approx(sum(c.token_logprobs))
    assert all(lp <= 0 for lp in c.token_logprobs)


def test_score_of_generated_text_matches_its_logprobs(sampler):
    c = sampler.generate([PROMPT], SamplingParams(n=1, temperature=1.0, max_new_tokens=10, ignore_eos=True,
                                                  seed=4))[0][0]
    got = sampler.score_ids(sampler.encode(PROMPT), [c.token_ids, c.token_ids[:3], []])
    torch.testing.assert_close(torch.tensor(got[0]), torch.tensor(c.token_logprobs), atol=1e-4, rtol=0)
    assert got[1] == pytest.approx(got[0][:3], abs=1e-5) and got[2] == []


def test_top_logprobs_come_from_the_decode_step_and_equal_teacher_forcing(sampler):
    """logprobs=k: each token's k best from the step's own logits (no second forward), equal to the
    teacher-forced top_k within float32 noise; the sampled token's log-prob among them when it is
    one of the k, never above the k-th when it is not; stop strings cut them with the tokens."""
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, ignore_eos=True, seed=9, logprobs=3)
    prompt_ids = sampler.encode(PROMPT)
    for c in sampler.generate([PROMPT], params)[0]:
        assert len(c.top_logprobs) == len(c.token_ids) and all(len(top) == 3 for top in c.top_logprobs)
        [scored] = sampler.score_top(prompt_ids, [c.token_ids], 3)
        for got, want, token, lp in zip(c.top_logprobs, scored.top, c.token_ids, c.token_logprobs):
            assert [t for t, _ in got] == [t for t, _ in want]
            torch.testing.assert_close(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]),
                                       atol=1e-4, rtol=0)
            best = dict(got)
            assert best[token] == pytest.approx(lp, abs=1e-5) if token in best else lp <= got[-1][1] + 1e-5
    plain = sampler.generate([PROMPT], SamplingParams(n=2, seed=1, max_new_tokens=4))[0]
    assert all(c.top_logprobs is None for c in plain)
    stopped = sampler.generate([PROMPT], SamplingParams(n=8, temperature=1.0, max_new_tokens=24, seed=3,
                                                         stop=["a", "e"], logprobs=1))[0]
    assert all(len(c.top_logprobs) == len(c.token_ids) for c in stopped)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n=0"), (dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"), (dict(min_p=1.0), "min_p"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(stop=[""]), "stop"),
    (dict(n=2, sample_indices=[1, 1]), "distinct"), (dict(n=1, sample_indices=[-1]), "distinct"),
    (dict(n=3, sample_indices=[0, 1]), "must hold n=3"), (dict(logprobs=21), "logprobs"),
    (dict(logprobs=-1), "logprobs"),
])
def test_bad_sampling_params(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        SamplingParams(**kwargs)


def test_bad_requests(sampler, tmp_path):
    with pytest.raises(InvalidInput, match="context"):
        sampler.generate([PROMPT], SamplingParams(max_new_tokens=250))
    with pytest.raises(InvalidInput, match="empty"):
        sampler.generate([], SamplingParams())
    with pytest.raises(InvalidInput, match="empty"):
        sampler.engine.add_request([], SamplingParams())
    assert not sampler.engine.has_unfinished()
    with pytest.raises(InvalidInput, match="not found"):
        Sampler.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="no config.json"):
        Sampler.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(InvalidInput, match="supported: llama, mistral, qwen2, qwen3, starcoder2, gemma, "):
        Sampler.from_pretrained(str(tmp_path))


def test_prompt_token_ids_outside_the_vocabulary(sampler):
    for bad in (-1, sampler.config.vocab_size):
        with pytest.raises(InvalidInput, match=f"token id {bad} is out of range"):
            sampler.engine.add_request([2, bad], SamplingParams())
    assert not sampler.engine.has_unfinished()


def test_eos_is_the_union_of_generation_config_config_and_tokenizer(tiny_llama, sampler, tmp_path):
    """As in vLLM: the tokenizer's own EOS (a chat model's <|im_end|>) ends a sample even where
    generation_config.json lists other ids; ignore_eos still runs to max_new_tokens."""
    from transformers import AutoTokenizer, GenerationConfig

    from budget_sampler.models.loader import eos_token_ids

    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=12, ignore_eos=True)
    ids = sampler.generate([PROMPT], greedy)[0][0].token_ids
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])  # a token's first appearance
    generation = [t for t in range(2, 300) if t not in ids][:2]
    assert 1 not in ids[:k + 1]  # config.json's (and the tokenizer's) EOS comes no earlier
    path = tmp_path / "ckpt"
    shutil.copytree(tiny_llama, path)
    GenerationConfig(eos_token_id=generation).save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(ids[k])
    tokenizer.save_pretrained(path)

    s = Sampler.from_pretrained(str(path), max_batch_size=2)
    assert s.engine.eos_token_ids == eos_token_ids(path, s.config, s.tokenizer) == {1, ids[k], *generation}
    assert s.encode(PROMPT) == sampler.encode(PROMPT)  # the new eos token left the prompt alone
    stopped = s.generate([PROMPT], SamplingParams(n=1, temperature=0, max_new_tokens=12))[0][0]
    assert stopped.finish_reason == "eos" and stopped.token_ids == ids[:k + 1]
    full = s.generate([PROMPT], greedy)[0][0]
    assert full.finish_reason == "length" and full.token_ids == ids


def test_two_live_streams_each_get_all_their_samples(sampler):
    """Streams of one Sampler iterated interleaved: whichever steps the engine, each sample goes
    to its own stream (each used to drop the samples of the other's requests)."""
    params = SamplingParams(n=5, temperature=1.0, max_new_tokens=6, seed=3)
    alone = [c.text for c in sampler.generate(["def f(x):", "class A:"], params)[1]]
    a, b = sampler.stream(["def f(x):"], params), sampler.stream(["class A:"], params)
    got_a, got_b, it_a = [], [], iter(a)
    for _ in range(2):  # a steps the engine first, finishing some of b's samples too
        got_a.append(next(it_a))
    got_b = list(b)
    got_a += list(it_a)
    assert sorted(c.index for _, c in got_a) == sorted(c.index for _, c in got_b) == list(range(5))
    assert [c.text for _, c in sorted(got_b, key=lambda x: x[1].index)] == alone
    assert not sampler.engine.has_unfinished() and not sampler._router.inboxes
