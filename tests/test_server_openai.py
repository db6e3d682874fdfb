"""The real `openai` client against the server on a tiny checkpoint with a chat template:
completions and chat, whole and streamed, n, seeds, stop, echo + logprobs with top_logprobs."""
import logging
import time

import httpx
import openai
import pytest

from sampler import Sampler
from sampler.server.protocol import Limits

from serving import WAIT_SECONDS, serving, wait_until

PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def served(tiny_chat):
    sampler = Sampler.from_pretrained(str(tiny_chat), max_batch_size=16)
    with serving(sampler, Limits(max_n=16, max_tokens=200)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0,
                               timeout=WAIT_SECONDS * 5)
        yield sampler, client, url


def test_completions_n_seed_and_stream_agree(served):
    _, client, _ = served
    request = dict(model="tiny", prompt=PROMPT, n=8, max_tokens=8, temperature=1.0, seed=3)
    whole = client.completions.create(**request)
    texts = [c.text for c in sorted(whole.choices, key=lambda c: c.index)]
    assert len(texts) == 8 and len(set(texts)) > 1
    assert [c.text for c in client.completions.create(**request).choices] == texts  # same seed
    streamed, usage = [""] * 8, None
    for chunk in client.completions.create(**request, stream=True,
                                           stream_options={"include_usage": True}):
        for c in chunk.choices:
            streamed[c.index] += c.text
        usage = chunk.usage or usage
    assert streamed == texts and usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stop(served):
    _, client, _ = served
    request = dict(model="tiny", prompt=PROMPT, n=4, max_tokens=12, temperature=1.0, seed=5,
                   extra_body={"ignore_eos": True})
    full = client.completions.create(**request).choices
    stop = next(c.text[3:5] for c in full if len(c.text) >= 5 and c.text[3:5].strip())
    stopped = client.completions.create(**request, stop=[stop]).choices
    for before, after in zip(full, stopped):
        if stop in before.text:
            assert after.text == before.text[:before.text.index(stop)] and after.finish_reason == "stop"


def test_echo_logprobs_are_teacher_forced_prompt_logprobs(served):
    sampler, client, _ = served
    out = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=1, temperature=0,
                                    echo=True, logprobs=5)
    c = out.choices[0]
    ids = sampler.encode(PROMPT)
    assert c.text.startswith(PROMPT)
    lps = c.logprobs.token_logprobs
    assert lps[0] is None and len(lps) == len(ids) + 1
    want = sampler.score_ids(ids[:1], [ids[1:]])[0]
    assert lps[1:-1] == pytest.approx(want, abs=1e-4)
    top = c.logprobs.top_logprobs
    assert top[0] is None
    for token, chosen, alternatives in zip(c.logprobs.tokens[1:], lps[1:], top[1:]):
        # 5 best + the chosen token, keyed by text: byte tokens that decode alike share a key
        assert len(alternatives) <= 6 and max(alternatives.values()) >= chosen - 1e-6
        assert token in alternatives
    assert top[-1][c.logprobs.tokens[-1]] == max(top[-1].values())  # greedy: the best token


def test_chat_whole_streamed_and_logprobs(served):
    _, client, _ = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "add"}]
    request = dict(model="tiny", messages=messages, n=2, max_completion_tokens=6, temperature=1.0,
                   seed=7)
    whole = client.chat.completions.create(**request, logprobs=True, top_logprobs=3)
    assert whole.object == "chat.completion" and len(whole.choices) == 2
    for c in whole.choices:
        assert c.message.role == "assistant"
        assert len(c.logprobs.content) == whole.usage.completion_tokens // 2 or c.finish_reason == "stop"
        assert all(len(t.top_logprobs) == 3 for t in c.logprobs.content)
    streamed = ["", ""]
    roles = []
    for chunk in client.chat.completions.create(**request, stream=True):
        for c in chunk.choices:
            roles += [c.delta.role] if c.delta.role else []
            streamed[c.index] += c.delta.content or ""
    assert roles == ["assistant"] * 2
    assert streamed == [c.message.content for c in sorted(whole.choices, key=lambda c: c.index)]


def test_chat_without_a_template_is_a_clear_400(tiny_llama):
    sampler = Sampler.from_pretrained(str(tiny_llama), max_batch_size=4)
    with serving(sampler) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])


def test_ignored_and_refused_fields(served):
    _, client, _ = served
    ok = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, user="u",
                                   presence_penalty=0, extra_body={"metadata": {"a": "b"}})
    assert len(ok.choices) == 1
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, frequency_penalty=0.5)


def test_context_overflow_names_the_field_to_lower(served):
    sampler, client, _ = served
    prompt = [5] * (sampler.max_context - 100)
    with pytest.raises(openai.BadRequestError, match="lower max_tokens to at most 100 .*max_gen_toks"):
        client.completions.create(model="tiny", prompt=prompt, max_tokens=200)


def test_stream_disconnect_cancels_and_missing_routes_do_not_log(served, monkeypatch, caplog):
    sampler, _, url = served
    step = sampler.engine.step

    def slow_step():  # 200 steps take >= 4 s: the client leaves long before the samples finish
        time.sleep(0.02)
        return step()

    monkeypatch.setattr(sampler.engine, "step", slow_step)
    before = sampler.stats.generated_tokens
    body = {"prompt": PROMPT, "n": 16, "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=WAIT_SECONDS) as http:
        with http.stream("POST", f"{url}/v1/completions", json=body) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the stream is open; then the client goes away
        wait_until(lambda: not sampler.engine.has_unfinished())
        assert sampler.stats.generated_tokens - before < 16 * 200  # aborted, not finished
        with caplog.at_level(logging.INFO):
            for _ in range(50):  # a client retrying a missing route in a loop
                assert http.post(f"{url}/v1/nope", json={}).status_code == 404
    assert not [r for r in caplog.records if r.name.startswith(("sampler", "uvicorn"))]
