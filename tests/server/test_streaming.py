"""Token streaming, prompt scoring and /metrics, with the real `openai` client against a shipped toy
model (its text is plain ASCII, so every token releases text and a stream has a chunk per token)."""
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from budget_sampler import Sampler, SamplingParams
from budget_sampler.server.protocol import Limits

from checkpoints import CHAT_TEMPLATE
from serving import WAIT_SECONDS, serving

PROMPT = "def total(xs):\n"


@pytest.fixture(scope="module")
def toy():
    sampler = Sampler.from_pretrained("toy-xs", max_batch_size=16)
    sampler.tokenizer.chat_template = CHAT_TEMPLATE  # the toy ships none
    with serving(sampler, Limits(max_n=8, max_tokens=64)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=WAIT_SECONDS)
        yield sampler, client, url


def collect(stream, chat):
    """Per choice index: the chunks' texts and finish reasons; and the usage chunk's usage."""
    texts, finishes, usage = {}, {}, None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            text = (c.delta.content or "") if chat else c.text
            if not chat or c.delta.role is None:  # chat's role chunk carries no token
                texts.setdefault(c.index, []).append(text)
            finishes.setdefault(c.index, []).append(c.finish_reason)
    return texts, finishes, usage


@pytest.mark.parametrize("chat", [False, True], ids=["completions", "chat"])
def test_stream_sends_a_chunk_per_token_that_join_to_the_whole_text(toy, chat):
    _, client, _ = toy
    if chat:
        create, request = client.chat.completions.create, dict(messages=[{"role": "user", "content": PROMPT}])
    else:
        create, request = client.completions.create, dict(prompt=PROMPT)
    request.update(model="tiny", n=3, max_tokens=24, temperature=1.0, seed=2)
    whole = create(**request)
    wanted = {c.index: c.message.content if chat else c.text for c in whole.choices}
    texts, finishes, usage = collect(create(**request, stream=True, stream_options={"include_usage": True}), chat)
    assert {i: "".join(t) for i, t in texts.items()} == wanted
    assert usage.completion_tokens == whole.usage.completion_tokens > 0
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert sum(map(len, texts.values())) >= usage.completion_tokens  # >= a chunk per generated token
    for i, reasons in finishes.items():  # only the last chunk of a choice finishes it
        assert reasons[-1] == next(c.finish_reason for c in whole.choices if c.index == i)
        assert None not in reasons[-1:] and set(reasons[:-1]) <= {None}


def test_stream_never_sends_a_stop_string_and_its_logprobs_join(toy):
    _, client, _ = toy
    request = dict(model="tiny", prompt=PROMPT, n=3, max_tokens=24, temperature=1.0, seed=4,
                   extra_body={"ignore_eos": True})
    full = client.completions.create(**request).choices
    stop = next(c.text[4:6] for c in full if len(c.text) >= 6 and c.text[4:6].strip())
    whole = {c.index: c for c in client.completions.create(**request, stop=[stop], logprobs=2).choices}
    streamed = {}
    for chunk in client.completions.create(**request, stop=[stop], logprobs=2, stream=True):
        for c in chunk.choices:
            streamed.setdefault(c.index, []).append(c)
    for i, chunks in streamed.items():
        text = "".join(c.text for c in chunks)
        assert text == whole[i].text and stop not in text  # every chunk extends a text without it
        tokens = [t for c in chunks for t in c.logprobs.tokens]
        assert "".join(tokens) == text
        offsets = [o for c in chunks for o in c.logprobs.text_offset]
        assert offsets == [len("".join(tokens[:k])) for k in range(len(tokens))]
        assert [lp for c in chunks for lp in c.logprobs.token_logprobs] == \
            pytest.approx(whole[i].logprobs.token_logprobs, abs=1e-5)
        for c in chunks:
            for token, top in zip(c.logprobs.tokens, c.logprobs.top_logprobs):
                assert token in top and len(top) <= 3


def test_top_logprobs_come_from_the_decode_step_and_equal_teacher_forcing(toy):
    sampler, client, _ = toy
    out = client.completions.create(model="tiny", prompt=PROMPT, n=2, max_tokens=8, temperature=1.0, seed=1,
                                    logprobs=3, extra_body={"ignore_eos": True})
    ids = sampler.encode(PROMPT)
    # the same samples, drawn directly (the server's engine thread is idle between requests)
    drawn = sampler.generate([PROMPT], SamplingParams(n=2, max_new_tokens=8, seed=1, ignore_eos=True))[0]
    for c, sample in zip(sorted(out.choices, key=lambda c: c.index), drawn):
        assert c.text == sample.text
        [scored] = sampler.score_top(ids, [sample.token_ids], 3)
        assert c.logprobs.token_logprobs == pytest.approx(scored.logprobs, abs=1e-4)
        for top, want in zip(c.logprobs.top_logprobs, scored.top):
            assert sorted(top.values(), reverse=True)[:3] == pytest.approx([v for _, v in want], abs=1e-4)


def test_prompt_scoring_with_max_tokens_0(toy):
    sampler, client, url = toy
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    [scored] = out.choices
    ids = sampler.encode(PROMPT)
    assert scored.text == PROMPT and scored.finish_reason == "length"
    assert "".join(scored.logprobs.tokens) == PROMPT and len(scored.logprobs.tokens) == len(ids)
    lps = scored.logprobs.token_logprobs
    assert lps[0] is None and scored.logprobs.top_logprobs[0] is None
    assert lps[1:] == pytest.approx(sampler.score_ids(ids[:1], [ids[1:]])[0], abs=1e-4)
    assert all(1 <= len(top) <= 2 for top in scored.logprobs.top_logprobs[1:])
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids), 0)
    # streamed, and for n prompts: the same choice, once per n, and no generation
    chunks = list(client.completions.create(model="tiny", prompt=[PROMPT, PROMPT], n=2, max_tokens=0, echo=True,
                                            logprobs=1, stream=True))
    for index in range(4):
        mine = [c for chunk in chunks for c in chunk.choices if c.index == index]
        assert "".join(c.text for c in mine) == PROMPT and mine[-1].finish_reason == "length"
        assert [lp for c in mine for lp in c.logprobs.token_logprobs] == lps
    # without echo there is nothing to return
    r = httpx.post(f"{url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 0}, timeout=WAIT_SECONDS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert "echo=true" in r.json()["error"]["message"]


def test_echo_with_generation_gives_prompt_and_completion_logprobs(toy):
    sampler, client, _ = toy
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, echo=True, logprobs=0, seed=0,
                                    extra_body={"ignore_eos": True})
    [c] = out.choices
    n_prompt = len(sampler.encode(PROMPT))
    assert c.text.startswith(PROMPT) and "".join(c.logprobs.tokens) == c.text
    assert len(c.logprobs.token_logprobs) == n_prompt + 5 and c.logprobs.token_logprobs[0] is None
    assert c.logprobs.text_offset[n_prompt] == len(PROMPT)


def metrics(url):
    text = httpx.get(f"{url}/metrics", timeout=WAIT_SECONDS).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("model_name") == "tiny" and s.labels.get("le") is None
            and s.labels.get("finished_reason", "length") == "length"}


def test_metrics_are_prometheus_text_with_vllm_names(toy):
    _, client, url = toy
    before = metrics(url)
    list(client.completions.create(model="tiny", prompt=PROMPT, n=2, max_tokens=6, seed=0, stream=True,
                                   extra_body={"ignore_eos": True}))
    after = metrics(url)
    grew = {name: after[name] - before[name] for name in after}
    assert grew["budget_sampler:generation_tokens_total"] >= 12
    assert grew["budget_sampler:prompt_tokens_total"] >= 1  # a new prompt was prefilled
    assert grew["budget_sampler:request_success_total"] == 2  # two samples finished by length
    assert grew["budget_sampler:time_to_first_token_seconds_count"] == 1
    # a step gives each new sample its first token and a second one: 6 tokens take 5 or 6 steps
    assert 4 <= grew["budget_sampler:inter_token_latency_seconds_count"] <= 5
    assert grew["budget_sampler:e2e_request_latency_seconds_count"] == 1
    assert after["budget_sampler:kv_blocks_total"] > 0 and 0 <= after["budget_sampler:kv_cache_usage_perc"] <= 1
    for name in ("num_requests_running", "num_requests_waiting", "num_samples_running", "num_samples_waiting",
                 "kv_blocks_used", "num_preemptions_total", "request_rejected_total"):
        assert f"budget_sampler:{name}" in after
    assert after["budget_sampler:num_requests_running"] == after["budget_sampler:num_requests_waiting"] == 0
