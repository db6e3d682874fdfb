"""Tensor parallel 2 over gloo (two CPU processes) against one rank, on tiny random checkpoints.

Tolerance: log-probs of the whole vocabulary within 1e-5 absolute in float32 (the ranks' partial
sums of o_proj and down_proj are added in another order than one rank's matmul); greedy samples
token-for-token equal; seeded samples token-for-token equal, except that a sample may part ways
at a draw that rounding decides (a uniform within about 1e-5 of a boundary of the CDF: there a
logit difference of rounding size picks the neighbouring token; seen once in these cases).
"""
import json
import multiprocessing
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from budget_sampler import Sampler, SamplingParams
from budget_sampler.errors import InvalidInput
from budget_sampler_kernels.sampling import sample_ref

from checkpoints import make_checkpoint

CASES = {
    "llama-gqa": ("llama", {}),
    "llama-mha": ("llama", {"num_key_value_heads": 4}),
    "qwen2-bias-tied": ("qwen2", {}),
    # every expert's intermediate slice on each rank, the block's output summed; layer 1 dense
    "qwen3-moe-dense-layer": ("qwen3_moe", {"num_hidden_layers": 3, "mlp_only_layers": [1]}),
    "phi3-fused-partial-rotary": ("phi3", {"partial_rotary_factor": 0.5}),  # qkv_proj / gate_up_proj as shipped
}
PROMPTS = ["def add(a, b):\n    return", "class Stack:\n    def push(self, x):\n"]
ATOL = 1e-5


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    model_type, overrides = CASES[request.param]
    path = make_checkpoint(tmp_path_factory.mktemp(request.param), model_type, seed=len(request.param), **overrides)
    with Sampler.from_pretrained(str(path), tensor_parallel=2, max_batch_size=8) as two:
        yield Sampler.from_pretrained(str(path), max_batch_size=8), two
    assert multiprocessing.active_children() == [] and not dist.is_initialized()


def _vocab_logprobs(sampler, prompt_ids, completion_ids):
    """Every completion position's log-probs over the whole vocabulary, teacher-forced."""
    vocab = sampler.config.vocab_size
    scored = sampler.score_top(prompt_ids, [completion_ids], vocab)[0]
    out = torch.empty(len(scored.top), vocab, dtype=torch.float64)
    for row, top in zip(out, scored.top):
        ids_, lps = zip(*top)
        row[list(ids_)] = torch.tensor(lps, dtype=torch.float64)
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_equal_one_rank(pair, prompt):
    one, two = pair
    ids = one.encode(prompt)
    torch.testing.assert_close(_vocab_logprobs(two, ids[:2], ids[2:]), _vocab_logprobs(one, ids[:2], ids[2:]),
                               atol=ATOL, rtol=0)


def test_greedy_token_for_token_equal(pair):
    one, two = pair
    params = SamplingParams(n=2, temperature=0, max_new_tokens=24, ignore_eos=True)
    want = one.generate(PROMPTS, params)
    got = two.generate(PROMPTS, params)
    assert [[c.token_ids for c in p] for p in got] == [[c.token_ids for c in p] for p in want]


def _near_tie(pair, prompt_ids, c, step, params) -> bool:
    """Whether the draw of token `step` of sample c is decided by rounding: the reference sampler
    draws more than one token from the two ranks' log-probs there and from one rank's plus noise
    of ATOL."""
    one, two = (_vocab_logprobs(s, prompt_ids, c.token_ids[:step + 1])[step].float() for s in pair)
    noise = torch.randn(8, len(one), generator=torch.Generator().manual_seed(step)) * ATOL
    rows = torch.cat([one[None], two[None], one + noise])
    B = len(rows)
    drawn = sample_ref(rows, torch.full((B,), params.temperature), torch.full((B,), params.top_k),
                       torch.full((B,), params.top_p), torch.full((B,), params.min_p), torch.full((B,), params.seed),
                       torch.full((B,), c.index), torch.full((B,), step))[0]
    return len(set(drawn.tolist())) > 1


def test_seeded_samples_equal_one_rank(pair):
    """Sampling, stop strings, EOS and slot refills (n > max_batch_size) all replay identically."""
    one, two = pair
    params = SamplingParams(n=11, temperature=0.9, top_p=0.95, max_new_tokens=16, stop=["\n\n"], seed=7)
    want, got = one.generate(PROMPTS, params), two.generate(PROMPTS, params)
    parted = 0
    for prompt, w, g in zip(PROMPTS, want, got):
        for a, b in zip(g, w):
            same = next((k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
            if same is not None:
                assert _near_tie(pair, one.encode(prompt), b, same, params), (b.index, same)
                parted += 1
                continue
            assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
            torch.testing.assert_close(torch.tensor(a.token_logprobs), torch.tensor(b.token_logprobs),
                                       atol=ATOL, rtol=0)
    assert parted <= 1


def test_unseeded_requests_and_cancel_stay_in_step(pair):
    """Rank 0 draws a missing seed for every rank, and a cancelled prompt is dropped everywhere:
    afterwards the ranks still agree (a seeded request gives one rank's samples)."""
    one, two = pair
    stream = two.stream(PROMPTS, SamplingParams(n=6, temperature=1.0, max_new_tokens=12))
    for i, _ in stream:
        stream.cancel(i)
    params = SamplingParams(n=3, temperature=0.8, max_new_tokens=8, seed=1, ignore_eos=True)
    assert [c.token_ids for c in two.generate(PROMPTS[:1], params)[0]] == \
        [c.token_ids for c in one.generate(PROMPTS[:1], params)[0]]


@pytest.mark.parametrize("tp, message", [(3, "does not divide"), (0, "tensor_parallel=0")])
def test_bad_tensor_parallel_is_one_invalid_input(tiny_llama, tp, message):
    before = set(multiprocessing.active_children())
    with pytest.raises(InvalidInput, match=message):
        Sampler.from_pretrained(str(tiny_llama), tensor_parallel=tp)
    assert set(multiprocessing.active_children()) == before


def test_cli_generate_tensor_parallel(tiny_llama, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "def add(a, b):"}\n')
    outs = []
    for tp in ("1", "2"):
        out = tmp_path / f"out{tp}.jsonl"
        r = subprocess.run([sys.executable, "-m", "budget_sampler.cli", "generate", "--model", str(tiny_llama),
                            "--prompts", str(prompts), "-n", "3", "--max-new-tokens", "6", "--seed", "1",
                            "--tensor-parallel", tp, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append([json.loads(line) for line in out.read_text().splitlines()])
    assert [{**row, "logprob": 0} for row in outs[1]] == [{**row, "logprob": 0} for row in outs[0]]
    assert [row["logprob"] for row in outs[1]] == pytest.approx([row["logprob"] for row in outs[0]], abs=1e-4)
