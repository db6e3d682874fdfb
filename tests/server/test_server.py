"""The OpenAI-compatible server under a real HTTP client on loopback.

A fake engine makes concurrency, disconnects and failures deterministic (it can hold every request
in flight until the test lets go); the tiny random checkpoint checks the real path end to end.
"""
import logging
import threading
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from budget_sampler import Completion, InvalidInput, Sampler
from budget_sampler.errors import check_context
from budget_sampler.params import GenerationStats, SchedulerStats
from budget_sampler.scoring import Scored
from budget_sampler.server.protocol import Limits

from serving import WAIT_SECONDS, serving, wait_until

# ---------------------------------------------------------------- fake engine


class FakeTokenizer:
    def decode(self, ids, **kwargs):
        return "".join(chr(ord("a") + t % 26) for t in ids)

    def get_vocab(self):  # no byte tokens to hold text back for
        return {}


class FakeEngine:
    """Each sample finishes after max_new_tokens steps, while `release` is set (until then its
    request counts as queued). Its text encodes the prompt, seed and sample index, so the test can
    check what reached the engine; every token's best alternative is token 0."""

    def __init__(self):
        self.release = threading.Event()
        self.reset()

    def reset(self):
        """Forget everything between tests (the server, and this engine, live for the module)."""
        assert not getattr(self, "requests", None), "a test left requests in flight"
        self.requests, self.added, self.aborted = {}, [], []
        self.release.set()
        self.fail_next_step = False
        self.seconds_per_step, self.samples_per_step = 0.001, None  # None: all n at once
        self.peak_in_flight = 0
        self._next_id = 0
        self.stats = GenerationStats()

    def add_request(self, prompt_ids, params, stream=False):
        check_context(len(prompt_ids), params.max_new_tokens, 64)  # the real engine's check
        rid, self._next_id = self._next_id, self._next_id + 1
        self.requests[rid] = [list(prompt_ids), params, 0]
        self.added.append((list(prompt_ids), params))
        return rid

    def abort_request(self, rid):
        self.aborted.append(rid)
        self.requests.pop(rid, None)

    def has_unfinished(self):
        return bool(self.requests)

    def take_deltas(self):
        return []

    def scheduler_stats(self):
        requests, samples = len(self.requests), sum(params.n for _, params, _ in self.requests.values())
        if self.release.is_set():
            return SchedulerStats(requests, 0, samples, 0, 0, 1)
        return SchedulerStats(0, requests, 0, samples, 0, 1)

    def step(self):
        time.sleep(self.seconds_per_step)
        self.peak_in_flight = max(self.peak_in_flight, len(self.requests))
        if self.fail_next_step:
            self.fail_next_step = False
            raise RuntimeError("injected engine failure")
        if not self.release.is_set():
            return []
        finished = []
        for rid, request in list(self.requests.items()):
            prompt_ids, params, steps = request
            request[2] = steps + 1
            if request[2] < params.max_new_tokens:
                continue
            first = request[2] - params.max_new_tokens
            count = params.n if self.samples_per_step is None else self.samples_per_step
            for i in range(first * count, min((first + 1) * count, params.n)):
                tokens = ([params.seed or 0, i] + [0] * params.max_new_tokens)[:params.max_new_tokens]
                top = [[(0, -0.25)] * params.logprobs] * len(tokens) if params.logprobs else None
                finished.append((rid, Completion(i, f"{prompt_ids}|{params.seed}|{i}", tokens, -1.0,
                                                 "eos" if i % 2 else "length", [-0.5] * len(tokens), top)))
            if (first + 1) * count >= params.n:
                del self.requests[rid]
        return finished


class FakeSampler:
    def __init__(self):
        self.engine = FakeEngine()
        self.tokenizer = FakeTokenizer()
        self.config = SimpleNamespace(vocab_size=100)
        self.max_context = 64

    def encode(self, prompt):
        if prompt == "crash":
            raise RuntimeError("injected tokenizer failure")
        if not prompt:
            raise InvalidInput("prompt is empty: it must encode to at least one token")
        return [ord(c) % 100 for c in prompt]

    def score_top(self, prompt_ids, completions, top_k):  # echo's prompt log-probs; best alternative: 0
        return [Scored([-0.5] * len(c), [[(0, -0.25)] * top_k] * len(c)) for c in completions]


@pytest.fixture(scope="module")
def fake_server():
    sampler = FakeSampler()
    with serving(sampler, Limits(max_n=8, max_tokens=32, max_prompts=3, max_body_bytes=2048),
                 access_log=True) as url:
        with httpx.Client(base_url=url, timeout=WAIT_SECONDS) as client:
            yield sampler.engine, client


@pytest.fixture
def fake(fake_server):
    engine, _ = fake_server
    engine.reset()
    yield fake_server
    engine.release.set()


def test_health_and_models(fake):
    _, client = fake
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in models["data"]] == [("tiny", "model", 64)]


def test_completion_schema_and_what_reaches_the_engine(fake):
    engine, client = fake
    r = client.post("/v1/completions", json={
        "model": "tiny", "prompt": "ab", "n": 3, "max_tokens": 4, "temperature": 0.5, "top_p": 0.9,
        "top_k": -1, "min_p": 0.1, "stop": "\n", "seed": 5, "logprobs": 1, "user": "me"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["id"].startswith("cmpl-") and isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == [f"[97, 98]|5|{i}" for i in range(3)]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "stop", "length"]  # eos -> stop
    logprobs = body["choices"][1]["logprobs"]
    # the tokens' texts join to the choice's text; the fake's text is not what its tokens decode
    # to ("fbaa"), so no prefix of it is known before the last token, which takes it all
    assert logprobs["tokens"] == ["", "", "", "[97, 98]|5|1"] and logprobs["token_logprobs"] == [-0.5] * 4
    assert logprobs["text_offset"] == [0, 0, 0, 0]
    # the chosen token and the logprobs=1 best (FakeEngine: token 0, "a" in context), as vLLM's
    assert logprobs["top_logprobs"] == [{"a": -0.25, "": -0.5}, {"a": -0.25, "": -0.5},
                                        {"a": -0.25, "": -0.5}, {"a": -0.25, "[97, 98]|5|1": -0.5}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}
    # one engine request for the prompt, carrying all n samples
    [(prompt_ids, params)] = engine.added
    assert prompt_ids == [97, 98]
    assert (params.n, params.max_new_tokens, params.temperature, params.top_p, params.top_k,
            params.min_p, params.stop, params.seed) == (3, 4, 0.5, 0.9, 0, 0.1, ["\n"], 5)


def test_prompt_list_is_one_engine_request_per_prompt(fake):
    engine, client = fake
    body = client.post("/v1/completions", json={"prompt": ["ab", "c"], "n": 2, "max_tokens": 3}).json()
    assert [(ids, p.n) for ids, p in engine.added] == [([97, 98], 2), ([99], 2)]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"].split("|")[0] for c in body["choices"]] == ["[97, 98]"] * 2 + ["[99]"] * 2
    assert body["usage"]["prompt_tokens"] == 3 and all(c["logprobs"] is None for c in body["choices"])
    tokens = client.post("/v1/completions", json={"prompt": [[5, 6], [7]], "max_tokens": 2}).json()
    assert [c["text"].split("|")[0] for c in tokens["choices"]] == ["[5, 6]", "[7]"]


BAD_REQUESTS = [
    # (body, status, param)
    ({"prompt": "a", "n": 0}, 400, "n"),
    ({"prompt": "a", "n": 9}, 400, "n"),  # above --max-n
    ({"prompt": "a", "n": True}, 400, "n"),
    ({"prompt": "a", "n": 2.0}, 400, "n"),
    ({"prompt": "a", "n": "2"}, 400, "n"),
    ({"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "a", "max_tokens": 33}, 400, "max_tokens"),  # above --max-tokens
    ({"prompt": "a", "temperature": -0.1}, 400, "temperature"),
    ({"prompt": "a", "temperature": 2.5}, 400, "temperature"),
    ({"prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "a", "top_p": 0}, 400, "top_p"),
    ({"prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "a", "top_k": -2}, 400, "top_k"),
    ({"prompt": "a", "top_k": 1.5}, 400, "top_k"),
    ({"prompt": "a", "min_p": 1}, 400, "min_p"),
    ({"prompt": "a", "stop": ""}, 400, "stop"),
    ({"prompt": "a", "stop": ["x", ""]}, 400, "stop"),
    ({"prompt": "a", "stop": ["s"] * 17}, 400, "stop"),
    ({"prompt": "a", "stop": 5}, 400, "stop"),
    ({"prompt": "a", "seed": -1}, 400, "seed"),
    ({"prompt": "a", "seed": 2**63}, 400, "seed"),
    ({"prompt": "a", "seed": "1"}, 400, "seed"),
    ({"prompt": "a", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "a", "logprobs": -1}, 400, "logprobs"),
    ({"prompt": "a", "ignore_eos": "yes"}, 400, "ignore_eos"),
    ({"prompt": "a", "echo": 1}, 400, "echo"),
    ({"prompt": "a", "stream": "yes"}, 400, "stream"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream_options"),  # no stream
    ({"prompt": "a", "best_of": 2}, 400, "best_of"),  # would change the samples
    ({"prompt": "a", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"prompt": "a", "frobnicate": 1}, 400, "frobnicate"),  # unknown field
    ({"n": 1}, 400, "prompt"),  # missing prompt
    ({"prompt": []}, 400, "prompt"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": ["a", [1]]}, 400, "prompt"),  # mixed
    ({"prompt": [[]]}, 400, "prompt"),
    ({"prompt": [-1]}, 400, "prompt"),
    ({"prompt": [True]}, 400, "prompt"),
    ({"prompt": ["a", "b", "c", "d"]}, 400, "prompt"),  # above max_prompts
    ({"prompt": [100]}, 400, "prompt"),  # outside the vocabulary (checked by the engine loop)
    ({"prompt": "a", "model": "other"}, 404, "model"),
    ({"prompt": ""}, 400, None),  # the sampler's own check: encodes to nothing
    ({"prompt": "a" * 40, "max_tokens": 30}, 400, "max_tokens"),  # exceeds the context
    ({"prompt": "a" * 64}, 400, "prompt"),  # the prompt alone fills the context
]


@pytest.mark.parametrize("body,status,param", BAD_REQUESTS, ids=lambda x: None)
def test_every_bad_field_is_a_4xx_json_error(fake, body, status, param):
    engine, client = fake
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == status and error["message"]
    assert engine.requests == {}  # nothing was left running
    assert client.get("/health").status_code == 200


def test_malformed_bodies_and_routes(fake):
    engine, client = fake
    cases = [
        (client.post("/v1/completions", content=b"{not json"), 400),
        (client.post("/v1/completions", content=b"\xff\xfe"), 400),
        (client.post("/v1/completions", json=["a"]), 400),
        (client.post("/v1/completions", json={"prompt": "a" * 3000}), 413),  # declared length
        (client.post("/v1/completions", content=(b"x" * 1024 for _ in range(3))), 413),  # chunked
        (client.get("/v1/completions"), 405),
        (client.post("/v1/embeddings", json={}), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
    assert engine.added == []


def test_concurrent_requests_are_in_the_engine_together(fake):
    engine, client = fake
    engine.release.clear()
    results = [None] * 4

    def send(i):
        results[i] = client.post("/v1/completions", json={"prompt": "abcd"[i], "n": 2, "max_tokens": 2,
                                                          "seed": i})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(engine.requests) == 4)  # all four held in flight at once
    engine.release.set()
    for t in threads:
        t.join(WAIT_SECONDS)
    assert engine.peak_in_flight == 4
    for i, r in enumerate(results):
        assert r.status_code == 200
        prompt_ids = [ord("abcd"[i]) % 100]
        assert [c["text"] for c in r.json()["choices"]] == [f"{prompt_ids}|{i}|{j}" for j in range(2)]


def test_client_disconnect_aborts_its_samples(fake):
    engine, client = fake
    engine.release.clear()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/completions", json={"prompt": "a", "n": 4, "max_tokens": 8}, timeout=0.5)
    wait_until(lambda: engine.aborted == [0])
    assert engine.requests == {}
    engine.release.set()
    assert client.post("/v1/completions", json={"prompt": "b"}).status_code == 200


def test_disconnect_is_noticed_while_samples_keep_arriving(fake):
    engine, client = fake
    engine.seconds_per_step, engine.samples_per_step = 0.2, 1  # a sample every 0.2 s for 1.6 s
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/completions", json={"prompt": "a", "n": 8, "max_tokens": 1}, timeout=0.3)
    wait_until(lambda: engine.aborted == [0])
    assert engine.requests == {}


def test_engine_failure_is_a_500_and_the_server_keeps_serving(fake):
    engine, client = fake
    engine.fail_next_step = True
    r = client.post("/v1/completions", json={"prompt": "a", "n": 2, "max_tokens": 2})
    assert r.status_code == 500 and "internal error" in r.json()["error"]["message"]
    assert engine.aborted == [0]
    assert client.post("/v1/completions", json={"prompt": "a"}).status_code == 200
    r = client.post("/v1/completions", json={"prompt": ["b", "crash"]})  # fails while being added
    assert r.status_code == 500
    assert client.post("/v1/completions", json={"prompt": "a"}).status_code == 200
    wait_until(lambda: not engine.requests)  # "b" was aborted or had finished


def test_one_log_line_per_request(fake, caplog):
    _, client = fake
    with caplog.at_level(logging.INFO, logger="budget_sampler.server"):
        client.post("/v1/completions", json={"prompt": "a", "n": 2, "max_tokens": 2})
        client.post("/v1/completions", json={"prompt": "a", "n": 0})
        client.get("/health")
        wait_until(lambda: len(caplog.records) >= 3)
    lines = sorted(r.getMessage().split(" ", 1)[1] for r in caplog.records if r.name == "budget_sampler.server")
    assert len(lines) == 3
    assert lines[0].startswith('"GET /health" 200')
    assert lines[1].startswith('"POST /v1/completions" 200') and "n=2" in lines[1]
    assert "completion_tokens=4" in lines[1]
    assert lines[2].startswith('"POST /v1/completions" 400')


def test_chat_prompt_is_the_templates_token_ids_with_bos_once():
    """Gemma's template writes {{ bos_token }} and its tokenizer adds BOS too: the engine must get
    apply_chat_template(tokenize=True)'s ids, not the rendered text encoded again (two BOS)."""
    from family_tokenizers import make_family_tokenizer

    tokenizer = make_family_tokenizer("gemma")
    sampler = FakeSampler()
    sampler.tokenizer, sampler.config.vocab_size = tokenizer, len(tokenizer)
    sampler.encode = lambda prompt: tokenizer(prompt).input_ids  # as Sampler.encode
    messages = [{"role": "user", "content": "Write add(a, b)."}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                             return_dict=False)
    assert expected.count(tokenizer.bos_token_id) == 1
    with serving(sampler) as url:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=WAIT_SECONDS,
                       json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert [ids for ids, _ in sampler.engine.added] == [expected]
    assert r.json()["usage"]["prompt_tokens"] == len(expected)


# ---------------------------------------------------------------- real tiny checkpoint


@pytest.fixture(scope="module")
def real(tiny_llama):
    sampler = Sampler.from_pretrained(str(tiny_llama), max_batch_size=16)
    with serving(sampler, Limits(max_n=16, max_tokens=200)) as url:
        with httpx.Client(base_url=url, timeout=WAIT_SECONDS * 5) as client:
            yield sampler, client


PROMPT = "def add(a, b):\n    return"


def complete(client, **body):
    r = client.post("/v1/completions", json={"prompt": PROMPT, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_real_n_samples_usage_and_seeds(real):
    sampler, client = real
    body = complete(client, n=4, max_tokens=6, temperature=1.0, seed=3, logprobs=0)
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert all(c["finish_reason"] in ("stop", "length") for c in choices)
    assert all(len(c["logprobs"]["token_logprobs"]) == len(c["logprobs"]["tokens"]) <= 6 for c in choices)
    assert body["usage"]["prompt_tokens"] == len(sampler.encode(PROMPT))
    assert body["usage"]["completion_tokens"] == sum(len(c["logprobs"]["tokens"]) for c in choices)
    assert len({c["text"] for c in choices}) > 1
    assert complete(client, n=4, max_tokens=6, temperature=1.0, seed=3, logprobs=0)["choices"] == choices
    other = complete(client, n=4, max_tokens=6, temperature=1.0, seed=4)["choices"]
    assert [c["text"] for c in other] != [c["text"] for c in choices]


def test_real_stop_strings_are_honoured(real):
    sampler, client = real
    request = dict(n=8, max_tokens=12, temperature=1.0, seed=11, ignore_eos=True, logprobs=0)
    full = complete(client, **request)["choices"]
    # a stop string: a clean generated token, past the first, in text that decodes cleanly up to it
    stop, index = next((token, c["index"]) for c in full
                       for k, token in enumerate(c["logprobs"]["tokens"][1:], start=1)
                       if token.strip() and token in c["text"]
                       and "\ufffd" not in "".join(c["logprobs"]["tokens"][:k + 1]))
    stopped = complete(client, **request, stop=[stop])["choices"]
    expected = full[index]["text"][:full[index]["text"].index(stop)]
    assert stopped[index]["text"] == expected and stopped[index]["finish_reason"] == "stop"
    assert all(stop not in c["text"] for c in stopped)


def test_real_concurrent_requests_match_requests_made_alone(real):
    _, client = real
    bodies = [dict(prompt=p, n=3, max_tokens=5, seed=i) for i, p in enumerate(["x = 1", "for i in", "class"])]
    alone = [client.post("/v1/completions", json=b).json()["choices"] for b in bodies]
    together = [None] * len(bodies)

    def send(i):
        together[i] = client.post("/v1/completions", json=bodies[i]).json()["choices"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_SECONDS * 5)
    assert together == alone


def test_real_disconnect_frees_the_engine(real, monkeypatch):
    sampler, client = real
    step = sampler.engine.step

    def slow_step():  # 200 steps take >= 4 s: the client's 0.5 s timeout always comes first
        time.sleep(0.02)
        return step()

    monkeypatch.setattr(sampler.engine, "step", slow_step)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/completions", json={"prompt": PROMPT, "n": 16, "max_tokens": 200,
                                             "ignore_eos": True}, timeout=0.5)
    wait_until(lambda: not sampler.engine.has_unfinished())
    assert sampler.engine.pool.num_used == 0  # its prefix KV was released
    assert complete(client, max_tokens=2)["choices"][0]["index"] == 0


def test_real_bad_input_from_the_engine(real):
    _, client = real
    r = client.post("/v1/completions", json={"prompt": "x" * 300, "max_tokens": 8})
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"prompt": [[1, 2, 10**6]]})
    assert r.status_code == 400 and "vocabulary" in r.json()["error"]["message"]


def test_cli_defaults_to_loopback_and_checks_its_bounds(capsys):
    from budget_sampler.cli import build_parser, main

    args = build_parser().parse_args(["serve", "--model", "m"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert main(["serve", "--model", "m", "--port", "70000"]) == 2
    assert main(["serve", "--model", "m", "--max-n", "0"]) == 2
    assert "--max-n=0 is invalid" in capsys.readouterr().err


def test_cli_chat_template_serves_a_model_without_one(tiny_llama, tmp_path, monkeypatch):
    """serve --chat-template FILE: chat works on a checkpoint that ships no template."""
    from starlette.testclient import TestClient
    from transformers import AutoTokenizer

    from budget_sampler.cli import main
    from budget_sampler.server import run

    from checkpoints import CHAT_TEMPLATE

    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    apps = []
    monkeypatch.setattr(run, "serve", lambda app, *args: apps.append(app))
    assert main(["serve", "--model", str(tiny_llama), "--max-batch-size", "4",
                 "--chat-template", str(tmp_path / "chat.jinja")]) == 0
    messages = [{"role": "user", "content": "hi"}]
    with TestClient(apps[0]) as client:
        r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 3})
    assert r.status_code == 200, r.text
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert not tokenizer.chat_template
    expected = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=True,
                                             add_generation_prompt=True, return_dict=False)
    assert r.json()["usage"]["prompt_tokens"] == len(expected)


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read: No such file or directory"),
    ("dir", "cannot be read: Is a directory"),
    (" \n", "is empty"),
    (b"\xff\xfe{{ messages }}", "is not UTF-8 text"),
    ("{% for m in messages %}{{ m['content'] }}", "is not a valid Jinja template: line 1"),
])
def test_cli_bad_chat_template_is_one_line_and_exit_2_before_the_model_loads(tmp_path, capsys,
                                                                             content, message):
    from budget_sampler.cli import main

    path = tmp_path / "chat.jinja"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    # the model does not exist either: the template's error comes first
    assert main(["serve", "--model", str(tmp_path / "no-model"), "--chat-template", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"budget-sampler serve: error: --chat-template {str(path)!r} {message}")
    assert err.count("\n") == 1


# The real `openai` client against the server on a tiny checkpoint with a chat template:
# completions and chat, whole and streamed, n, seeds, stop, echo + logprobs with top_logprobs.

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
    assert not [r for r in caplog.records if r.name.startswith(("budget_sampler", "uvicorn"))]


# ---------------------------------------------------------------- backpressure, timeouts, shutdown


def test_a_full_queue_is_a_503_with_retry_after_and_disturbs_nothing():
    sampler = FakeSampler()
    engine = sampler.engine
    with serving(sampler, Limits(max_queued_requests=3, max_queued_samples=5)) as url, \
            httpx.Client(base_url=url, timeout=WAIT_SECONDS) as client:
        engine.reset()
        engine.release.clear()  # requests stay queued
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.setdefault(i, client.post(
            "/v1/completions", json={"prompt": "ab"[i], "n": 2, "max_tokens": 2}))) for i in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: len(engine.requests) == 2)
        r = client.post("/v1/completions", json={"prompt": ["c", "d"]})  # 2 + 2 prompts > 3
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "--max-queued-requests 3" in r.json()["error"]["message"]
        r = client.post("/v1/completions", json={"prompt": "c", "n": 2, "max_tokens": 2})  # 4 + 2 samples > 5
        assert r.status_code == 503 and "--max-queued-samples 5" in r.json()["error"]["message"]
        assert client.get("/health").status_code == 200 and len(engine.requests) == 2
        assert "budget_sampler:request_rejected_total{model_name=\"tiny\"} 2.0" in client.get("/metrics").text
        engine.release.set()
        for t in threads:
            t.join(WAIT_SECONDS)
        assert [results[i].status_code for i in range(2)] == [200, 200]
        # a request bigger than the bounds is admitted into an empty queue
        assert client.post("/v1/completions", json={"prompt": ["a", "b", "c"], "n": 3}).status_code == 200


def test_request_timeout_cancels_the_request():
    sampler = FakeSampler()
    engine = sampler.engine
    with serving(sampler, Limits(request_timeout=0.3)) as url, \
            httpx.Client(base_url=url, timeout=WAIT_SECONDS) as client:
        engine.reset()
        engine.release.clear()
        r = client.post("/v1/completions", json={"prompt": "a", "n": 2})
        assert r.status_code == 504 and "--request-timeout" in r.json()["error"]["message"]
        wait_until(lambda: engine.aborted == [0])
        with client.stream("POST", "/v1/completions", json={"prompt": "a", "stream": True}) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and '"code": 504' in events[-2]
        wait_until(lambda: engine.aborted == [0, 1] and not engine.requests)
        engine.release.set()
        assert client.post("/v1/completions", json={"prompt": "a"}).status_code == 200


def test_shutdown_lets_requests_finish_then_cancels_them_past_the_timeout():
    import socket

    import uvicorn

    from budget_sampler.server.app import build_app
    from budget_sampler.server.run import GracefulServer

    sampler = FakeSampler()
    engine = sampler.engine
    engine.reset()
    app = build_app(sampler, "tiny")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = GracefulServer(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=WAIT_SECONDS),
                            app.state.engine_loop, shutdown_timeout=0.5)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    engine.release.clear()  # the request in flight never finishes by itself
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/completions"
    with httpx.Client(timeout=WAIT_SECONDS) as client:
        with client.stream("POST", url, json={"prompt": "a", "n": 2, "stream": True}) as r:
            wait_until(lambda: engine.requests)
            server.should_exit = True
            wait_until(lambda: app.state.engine_loop.draining)
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert "the server is shutting down" in events[-2] and '"code": 503' in events[-2]
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive() and not app.state.engine_loop.is_alive() and not engine.requests


@pytest.mark.parametrize("flag, value, message", [
    ("--max-queued-requests", "0", "--max-queued-requests=0 is invalid: must be >= 1"),
    ("--max-queued-samples", "-1", "--max-queued-samples=-1 is invalid: must be >= 1"),
    ("--request-timeout", "0", "--request-timeout=0 is invalid: must be a number of seconds > 0"),
    ("--shutdown-timeout", "-1", "--shutdown-timeout=-1 is invalid: must be a number of seconds >= 0"),
    ("--shutdown-timeout", "nan", "--shutdown-timeout=nan is invalid"),
])
def test_cli_bad_serving_bounds_are_one_line_and_exit_2(capsys, flag, value, message):
    from budget_sampler.cli import main

    assert main(["serve", "--model", "m", flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
