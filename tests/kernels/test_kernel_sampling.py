"""Fused sampling Triton kernel, interpreted on CPU, against the torch reference.

The kernel draws the reference's uniforms (same 32-bit hash), makes the same rejection decisions
and finds the same truncation thresholds without sorting, so tokens must be identical (random
float logits have no ties); log-probs agree to 1e-5 (float32 log-sum-exp in another order).
Every path is checked: the rounds alone, the fallback alone (ROUNDS = 0) and one round then the
fallback (ROUNDS = 1).
On a tiny vocabulary its frequencies must match the truncated softmax: with N = 256 draws the total
variation distance to the exact distribution is below 0.12 (its expected value is about 0.04), and
the drawn tokens are exactly the kept ones (every kept token has probability >= 0.1 here, so each
appears with probability > 1 - 1e-11).
"""
import pytest
import torch

from budget_sampler_kernels import sampling
from budget_sampler_kernels.sampling import first_reaching, sample_ref, sample_triton, truncation_mask

ROW_PARAMS = [  # temperature, top_k, top_p, min_p: one row each
    (0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (0.7, 0, 0.9, 0.0), (1.3, 0, 1.0, 0.1), (1.0, 5, 1.0, 0.0),
    (1.0, 0, 0.5, 0.0), (0.8, 3, 0.8, 0.0), (1.0, 1, 1.0, 0.0), (1.0, 10**6, 1.0, 0.05), (0.5, 0, 0.95, 0.2),
    (2.0, 50, 0.3, 0.0), (1.0, 2, 0.99, 0.0), (1.0, 0, 0.01, 0.0),
]


def columns(rows, n=1):
    t, k, p, mp = zip(*rows)
    return (torch.tensor(t).repeat(n), torch.tensor(k, dtype=torch.int32).repeat(n), torch.tensor(p).repeat(n),
            torch.tensor(mp).repeat(n))


@pytest.mark.parametrize("chunks", [None, 3], ids=["chunked-by-device", "3-chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("vocab", [1, 7, 1000, 5000])
def test_tokens_match_reference(vocab, dtype, chunks):
    g = torch.Generator().manual_seed(vocab)
    B = len(ROW_PARAMS)
    logits = (torch.randn(B, vocab, generator=g) * 3).to(dtype)
    args = (logits, *columns(ROW_PARAMS), torch.randint(-2**62, 2**62, (B,), generator=g), torch.arange(B),
            torch.randint(0, 1000, (B,), generator=g))
    tokens, logprobs = sample_triton(*args, chunks=chunks)
    want_tokens, want_logprobs = sample_ref(*args)
    assert tokens.dtype == torch.int64 and logprobs.dtype == torch.float32
    assert tokens.tolist() == want_tokens.tolist()
    torch.testing.assert_close(logprobs, want_logprobs, atol=1e-5, rtol=0)
    assert tokens[0] == logits[0].float().argmax()


@pytest.mark.parametrize("rounds", [0, 1])
def test_fallback_matches_reference(rounds, monkeypatch):
    """Rows the rounds leave (all of them with ROUNDS = 0) take the exact fallback; with 1 round
    the rows of small top-p reach it after a rejection."""
    monkeypatch.setattr(sampling, "ROUNDS", rounds)
    g = torch.Generator().manual_seed(rounds)
    B = len(ROW_PARAMS)
    logits = torch.randn(B, 1000, generator=g) * 3
    args = (logits, *columns(ROW_PARAMS), torch.randint(-2**62, 2**62, (B,), generator=g), torch.arange(B),
            torch.randint(0, 1000, (B,), generator=g))
    tokens, logprobs = sample_triton(*args, chunks=3)
    want_tokens, want_logprobs = sample_ref(*args)
    assert tokens.tolist() == want_tokens.tolist()
    torch.testing.assert_close(logprobs, want_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rounds", [0, 1, 3])
@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [
    (1.0, 0, 0.5, 0.0), (0.8, 0, 0.95, 0.0), (1.5, 0, 1.0, 0.3), (1.0, 5, 0.7, 0.0), (0.7, 0, 0.9, 0.1),
    (1.0, 3, 1.0, 0.0), (1.2, 4, 1.0, 0.2)])
def test_reference_draws_the_truncated_softmax(temperature, top_k, top_p, min_p, rounds, monkeypatch):
    """The rejection rounds and the fallback draw exactly the truncated softmax: 40,000 draws of
    the reference (the kernel draws its tokens, above) have a total variation distance to it
    below 0.02 (expected about 0.006 over these 8 tokens) and draw only kept tokens."""
    monkeypatch.setattr(sampling, "ROUNDS", rounds)
    N = 40_000
    logits = torch.tensor([2.0, 1.7, 1.2, 0.9, 0.1, -0.5, -1.0, -3.0])
    want = exact_distribution(logits, temperature, top_k, top_p, min_p)
    tokens, _ = sample_ref(logits.expand(N, -1), *columns([(temperature, top_k, top_p, min_p)], N),
                           torch.full((N,), 5), torch.arange(N), torch.full((N,), 9))
    freq = torch.bincount(tokens, minlength=len(logits)).double() / N
    assert 0.5 * (freq - want).abs().sum() < 0.02
    assert set(tokens.tolist()) <= set(torch.nonzero(want > 0).flatten().tolist())


@pytest.mark.parametrize("chunks", [None, 3], ids=["chunked-by-device", "3-chunks"])
def test_peaked_rows_match_reference(chunks):
    """A real model's rows are peaked: a few tokens hold most of the mass, so top-k / top-p / min-p
    keep few tokens and the kernel skips the blocks whose largest logit is below the cut."""
    g = torch.Generator().manual_seed(7)
    B, vocab = len(ROW_PARAMS), 5000
    logits = torch.randn(B, vocab, generator=g)
    spikes = torch.randint(0, vocab, (B, 6), generator=g)
    logits.scatter_(1, spikes, 12 + 3 * torch.rand(B, 6, generator=g))
    args = (logits, *columns(ROW_PARAMS), torch.randint(-2**62, 2**62, (B,), generator=g), torch.arange(B),
            torch.randint(0, 1000, (B,), generator=g))
    tokens, logprobs = sample_triton(*args, chunks=chunks)
    want_tokens, want_logprobs = sample_ref(*args)
    assert tokens.tolist() == want_tokens.tolist()
    torch.testing.assert_close(logprobs, want_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("vocab", [1, 63, 64, 65, 1000])
def test_first_reaching_equals_a_float64_scan(vocab):
    """The two-level scan against searchsorted on a float64 cumsum; targets away from the
    cumulative sums by far more than float32 rounding, zero weights, targets past the total."""
    g = torch.Generator().manual_seed(vocab)
    w = torch.rand(50, vocab, generator=g) * (torch.rand(50, vocab, generator=g) < 0.5)
    w[torch.arange(50), torch.arange(50) % vocab] += 0.1  # every row has mass
    w[0] = 0.0
    w[0, 0] = 1.0
    cdf = w.double().cumsum(1)
    gaps = torch.cat([cdf[:, :1], cdf.diff(dim=1)], 1)
    target = torch.rand(50, generator=g, dtype=torch.float64) * cdf[:, -1]
    near = (cdf - target.unsqueeze(1)).abs().min(1).values < 1e-4
    target[near] = target[near] + 2e-4  # keep the float32 scan out of rounding ties
    target = target.clamp_max(cdf[:, -1] * (1 - 1e-5))
    want = torch.searchsorted(cdf, target.unsqueeze(1)).squeeze(1)
    got = first_reaching(w, target.float())
    assert got.tolist() == want.tolist()
    assert (gaps.gather(1, got.unsqueeze(1)) > 0).all()  # the token reached has weight
    assert first_reaching(w, (target / cdf[:, -1]).float(), of_total=True).tolist() == want.tolist()
    past = cdf[:, -1].float() * 1.5
    assert first_reaching(w, past).tolist() == [vocab] * 50
    last = [max(i for i in range(vocab) if w[r, i] > 0) for r in range(50)]
    assert first_reaching(w, torch.full((50,), 1.5), of_total=True).tolist() == last


def exact_distribution(logits, temperature, top_k, top_p, min_p):
    scaled = (logits / temperature).unsqueeze(0)
    keep = truncation_mask(scaled, torch.tensor([top_k]), torch.tensor([top_p]), torch.tensor([min_p]))
    return torch.softmax(scaled.double().masked_fill(~keep, float("-inf")), dim=-1)[0]


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [(0.8, 0, 1.0, 0.1), (1.5, 4, 0.8, 0.0)])
def test_frequencies_match_truncated_softmax(temperature, top_k, top_p, min_p):
    N = 128
    logits = torch.tensor([2.0, 1.2, 0.9, 0.1, -0.5, -3.0])
    want = exact_distribution(logits, temperature, top_k, top_p, min_p)
    args = (logits.expand(N, -1), *columns([(temperature, top_k, top_p, min_p)], N), torch.full((N,), 11),
            torch.arange(N), torch.full((N,), 3))
    tokens, logprobs = sample_triton(*args)
    assert torch.equal(tokens, sample_ref(*args)[0])
    freq = torch.bincount(tokens, minlength=len(logits)).double() / N
    assert 0.5 * (freq - want).abs().sum() < 0.12
    assert set(tokens.tolist()) == set(torch.nonzero(want > 0).flatten().tolist())
    torch.testing.assert_close(logprobs, torch.log_softmax(logits, -1)[tokens], atol=1e-6, rtol=0)


def test_seeds_and_batch_composition():
    """Same (seed, sample index, step) -> same token, whatever else is in the batch."""
    g = torch.Generator().manual_seed(0)
    B = 6
    logits = torch.randn(B, 300, generator=g)
    params = columns([(1.0, 0, 0.9, 0.0)], B)
    seeds, idx, steps = torch.full((B,), 5), torch.arange(B), torch.full((B,), 2)
    a, _ = sample_triton(logits, *params, seeds, idx, steps)
    b, _ = sample_triton(logits, *params, seeds, idx, steps)
    assert torch.equal(a, b)
    alone, _ = sample_triton(logits[3:4], *(p[3:4] for p in params), seeds[3:4], idx[3:4], steps[3:4])
    assert alone.item() == a[3].item()
    other_seed, _ = sample_triton(logits, *params, seeds + 1, idx, steps)
    assert not torch.equal(other_seed, a)


def test_greedy_takes_the_first_maximum():
    logits = torch.tensor([[0.0, 3.0, 1.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    zeros = torch.zeros(2)
    tokens, _ = sample_triton(logits, zeros, torch.zeros(2, dtype=torch.int32), torch.ones(2), zeros,
                              torch.arange(2), torch.arange(2), torch.arange(2))
    assert tokens.tolist() == [1, 0]
