"""The sampling reference draws from softmax(logits / T) after top-k / top-p / min-p truncation.

Statistical bound: with N = 40,000 draws over V = 12 tokens, the total variation distance between
empirical and exact distributions is below 0.02 (its expected value here is about 0.008).
Truncated-away tokens must never appear.
"""
import pytest
import torch

from budget_sampler_kernels.sampling import sample_ref

N, V = 40_000, 12


def exact(logits, temperature, top_k, top_p, min_p):
    """Hugging Face's warpers, written out: temperature, top-k, top-p, min-p."""
    x = logits.double() / temperature
    if top_k:
        x[x < torch.topk(x, top_k).values[-1]] = float("-inf")
    p = torch.softmax(x, -1)
    order = torch.argsort(p, descending=True)
    mass_before = torch.cumsum(p[order], 0) - p[order]
    drop = order[mass_before >= top_p]
    x[drop] = float("-inf")
    p = torch.softmax(x, -1)
    x[p < min_p * p.max()] = float("-inf")
    return torch.softmax(x, -1)


def draw(logits, temperature, top_k, top_p, min_p, seed=0):
    b = torch.full((N,), 1.0)
    tokens, logprobs = sample_ref(logits.expand(N, V), b * temperature, (b * top_k).int(), b * top_p,
                                  b * min_p, torch.full((N,), seed), torch.arange(N), torch.zeros(N))
    return tokens, logprobs


@pytest.mark.parametrize("temperature, top_k, top_p, min_p", [
    (1.0, 0, 1.0, 0.0), (0.6, 0, 1.0, 0.0), (1.3, 4, 1.0, 0.0), (1.0, 0, 0.7, 0.0),
    (0.8, 0, 1.0, 0.15), (1.0, 6, 0.8, 0.05),
])
def test_frequencies_match_truncated_softmax(temperature, top_k, top_p, min_p):
    logits = torch.randn(V) * 1.5
    want = exact(logits, temperature, top_k, top_p, min_p)
    tokens, logprobs = draw(logits, temperature, top_k, top_p, min_p, seed=int(torch.randint(0, 2**40, ())))
    freq = torch.bincount(tokens, minlength=V).double() / N
    assert 0.5 * (freq - want).abs().sum() < 0.02
    assert set(tokens.unique().tolist()) <= set(torch.nonzero(want > 0).flatten().tolist())
    torch.testing.assert_close(logprobs.double(), torch.log_softmax(logits.double(), -1)[tokens], atol=1e-5, rtol=0)


def test_greedy_rows_and_seeds():
    logits = torch.randn(5, 50)
    t0, _ = sample_ref(logits, torch.zeros(5), torch.zeros(5, dtype=torch.int32), torch.ones(5), torch.zeros(5),
                       torch.arange(5), torch.arange(5), torch.zeros(5))
    assert torch.equal(t0, logits.argmax(-1))
    args = (logits, torch.ones(5), torch.zeros(5, dtype=torch.int32), torch.ones(5), torch.zeros(5))
    a = sample_ref(*args, torch.full((5,), 3), torch.arange(5), torch.full((5,), 9))[0]
    b = sample_ref(*args, torch.full((5,), 3), torch.arange(5), torch.full((5,), 9))[0]
    assert torch.equal(a, b)
    # a row's draw depends on its own (seed, sample, step) only, not on its neighbours
    c = sample_ref(logits[2:3], torch.ones(1), torch.zeros(1, dtype=torch.int32), torch.ones(1), torch.zeros(1),
                   torch.full((1,), 3), torch.tensor([2]), torch.tensor([9]))[0]
    assert c.item() == a[2].item()
