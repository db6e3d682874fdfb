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
    from sampler import SamplingParams
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
